"""Few-shot sources and the system turn in evaluation, on lm-eval's real task definitions.

The model is a spy: it records the requests lm-eval sends and answers with constants, so the
tests see exactly the prompts lm-eval built (few-shot examples, chat template, system turn)
in the time it takes to build them. ``eval=leaderboard_v040`` is checked against the requests
lm-eval 46c7966 builds for the same fixtures (tests/fixtures/lm_eval_v040, made by the
script beside them).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import datasets
import lm_eval
import pytest
from conftest import LEADERBOARD_FIXTURES, ROOT, compose_config, on_fixtures

from evaluation import eval_spec, plan_tasks, prepare, run_tasks
from evaluation.errors import EvalConfigError
from evaluation.runner import LoadedModel

V040_REQUESTS = ROOT / "tests" / "fixtures" / "lm_eval_v040" / "requests.json"
ON_FIXTURES = on_fixtures()


def spy_on(patch: pytest.MonkeyPatch, cache: Path) -> dict[str, list]:
    """Requests the model receives from now on, by task."""
    seen: dict[str, list] = defaultdict(list)

    def answer(value):
        def respond(self, requests, disable_tqdm=False):
            for request in requests:
                seen[request.task_name].append(request)
            return [value] * len(requests)

        return respond

    patch.setattr(LoadedModel, "loglikelihood", answer((0.0, False)))
    patch.setattr(LoadedModel, "generate_until", answer(""))
    # datasets keys a local folder's cache by its layout: a private cache is never stale.
    patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return seen


@pytest.fixture
def spy(monkeypatch, tmp_path) -> dict[str, list]:
    return spy_on(monkeypatch, tmp_path / "hf")


def score(tiny, tmp_path: Path, *overrides: str) -> dict:
    """run_tasks on the tiny model under ``overrides``: lm-eval's outputs and the summary."""
    cfg = compose_config(*overrides)
    return run_tasks(prepare(plan_tasks(cfg.eval), tmp_path / "work"), *tiny, cfg.eval)


@pytest.fixture(scope="module")
def v040(tiny, tmp_path_factory) -> tuple[dict[str, list], dict]:
    """The requests and the results of eval=leaderboard_v040 on the fixtures."""
    tmp_path = tmp_path_factory.mktemp("v040")
    with pytest.MonkeyPatch.context() as patch:
        seen = spy_on(patch, tmp_path / "hf")
        return seen, score(tiny, tmp_path, "eval=leaderboard_v040", *ON_FIXTURES)


def arguments(requests: list) -> list[list]:
    ordered = sorted(requests, key=lambda r: (r.doc_id, r.idx))
    return [json.loads(json.dumps(r.arguments)) for r in ordered]


# ------------------------------------------------------------------ lm-eval 0.4.0's few-shot
def test_v040_preset_sends_the_requests_lm_eval_0_4_0_built(v040):
    seen, _ = v040
    expected = json.loads(V040_REQUESTS.read_text())
    for task, requests in expected.items():
        assert arguments(seen[task]) == requests, task
    # Winogrande: 46c7966 drew 5 examples and dropped them; the sentence alone is scored.
    assert all("\n\n" not in context for context, _ in expected["winogrande"])
    assert expected["gsm8k"][0][1]["until"] == ["\n\n", "Question:"]


def test_default_leaderboard_differs_from_0_4_0_where_lm_eval_changed(tiny, tmp_path, spy):
    score(tiny, tmp_path, "eval=leaderboard", "eval.tasks=[winogrande,gsm8k]", *ON_FIXTURES)
    expected = json.loads(V040_REQUESTS.read_text())
    winogrande = arguments(spy["winogrande"])
    assert winogrande != expected["winogrande"]
    assert all(context.count("\n\n") == 5 for context, _ in winogrande)  # five examples
    gsm8k = arguments(spy["gsm8k"])
    assert [c for c, _ in gsm8k] == [c for c, _ in expected["gsm8k"]]  # the same examples
    assert "\n\n" not in gsm8k[0][1]["until"]


def test_results_record_lm_eval_version_and_each_tasks_fewshot_source(v040):
    summary = v040[1]["summary"]
    assert summary["lm_eval_version"] == lm_eval.__version__
    tasks = {name: task["fewshot"] for name, task in summary["tasks"].items()}
    # ARC names no few-shot split: lm-eval's rule takes the training split.
    assert tasks["arc_challenge"] == {
        "num_fewshot": 25,
        "split": "train",
        "file": None,
        "dataset": str(LEADERBOARD_FIXTURES / "ai2_arc"),
        "dataset_name": "ARC-Challenge",
        "sampler": "default",
        "pool": 26,
    }
    assert tasks["winogrande"] == tasks["truthfulqa_mc2"] == {"num_fewshot": 0}
    assert (tasks["gsm8k"]["split"], tasks["gsm8k"]["pool"]) == ("train", 6)
    assert (tasks["hellaswag"]["split"], tasks["hellaswag"]["pool"]) == ("train", 11)
    mmlu = tasks["mmlu"]
    assert (mmlu["split"], mmlu["sampler"], mmlu["pool"], mmlu["subtasks"]) == (
        "dev",
        "first_n",
        5,
        57,
    )


def test_fewshot_split_setting_moves_where_examples_come_from(tiny, tmp_path, spy):
    result = score(
        tiny,
        tmp_path,
        "eval=leaderboard",
        "eval.tasks=[arc_challenge]",
        "eval.settings.arc_challenge.num_fewshot=2",
        "eval.settings.arc_challenge.fewshot_split=test",
        *ON_FIXTURES,
    )
    source = result["summary"]["tasks"]["arc_challenge"]["fewshot"]
    assert (source["split"], source["pool"]) == ("test", 3)
    rows = (LEADERBOARD_FIXTURES / "ai2_arc" / "data" / "test.jsonl").read_text().splitlines()
    questions = [json.loads(row)["question"] for row in rows]
    for request in spy["arc_challenge"]:
        context, evaluated = request.arguments[0], questions[request.doc_id]
        examples = [q for q in questions if q != evaluated and f"Question: {q}\n" in context]
        # two examples, both from the test split, and not the question being asked
        assert len(examples) == 2 and context.count("Question: ") == 3
        assert context.count(f"Question: {evaluated}\n") == 1


def test_a_fewshot_split_the_data_lacks_names_the_setting(tmp_path, spy):
    cfg = compose_config(
        "eval=leaderboard",
        "eval.tasks=[arc_challenge]",
        "eval.settings.arc_challenge.fewshot_split=validation",
        *ON_FIXTURES,
    )
    with pytest.raises(EvalConfigError, match=r"arc_challenge.fewshot_split='validation'"):
        prepare(plan_tasks(cfg.eval), tmp_path / "work")
    with pytest.raises(
        EvalConfigError, match=r"arith_gsm.fewshot_split='dev'.*\['test', 'train'\]"
    ):
        plan_tasks(compose_config("eval.settings.arith_gsm.fewshot_split=dev").eval)
    cfg = compose_config(
        "eval=leaderboard",
        "eval.tasks=[truthfulqa_mc2]",
        "eval.settings.truthfulqa_mc2.until=[Q]",
        *ON_FIXTURES,
    )
    with pytest.raises(EvalConfigError, match=r"truthfulqa_mc2.until.*generate_until"):
        prepare(plan_tasks(cfg.eval), tmp_path / "work")


def test_local_files_are_named_in_the_fewshot_source(tiny, tmp_path, spy):
    tasks = score(tiny, tmp_path, "eval.limit=2")["summary"]["tasks"]
    assert tasks["arith_gsm"]["fewshot"] == {
        "num_fewshot": 2,
        "split": "train",
        "file": "evaluation/tasks/data/arith_train.jsonl",
        "dataset": "json",
        "dataset_name": None,
        "sampler": "default",
        "pool": 16,
    }
    assert tasks["arith_mc2"]["fewshot"] == {"num_fewshot": 0}
    # a user's exemplar file, converted beside the scores: named relative to them
    rows = [{"question": f"What is {n} + {n}?", "answer": f"#### {2 * n}"} for n in range(3)]
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(row) + "\n" for row in rows))
    user = score(
        tiny,
        tmp_path,
        "eval=jsonl",
        f"eval.settings.user.path={mine}",
        f"eval.settings.user.fewshot_path={mine}",
        "eval.settings.user.num_fewshot=1",
    )["summary"]["tasks"]["user"]["fewshot"]
    assert (user["split"], user["file"], user["pool"]) == ("train", "user/train.jsonl", 3)


def test_existing_keys_gain_entries_only_for_settings_that_are_set():
    for preset in ("eval=embedded", "eval=leaderboard", "eval=embedded_chat"):
        cfg = compose_config(preset, "generation.system_prompt=''")
        spec = eval_spec(cfg.eval, plan_tasks(cfg.eval))
        extra = {"system_prompt"} if cfg.eval.apply_chat_template else set()
        assert (
            set(spec)
            == {
                "results_format",
                "lm_eval",
                "tasks",
                "limit",
                "max_new_tokens",
                "apply_chat_template",
                "seed",
            }
            | extra
        )
        assert spec.get("system_prompt", "") == ""
        for task in spec["tasks"].values():
            assert set(task) == {"base", "num_fewshot", "metric", "dataset_path", "fields", "data"}
    v040 = compose_config("eval=leaderboard_v040").eval
    spec = eval_spec(v040, plan_tasks(v040))
    assert spec["tasks"]["gsm8k"]["until"] == ["\n\n", "Question:"]
    assert spec["tasks"]["winogrande"]["num_fewshot"] == 0


def test_paper_preset_scores_with_lm_eval_0_4_0s_settings():
    cfg = compose_config("experiment=paper_zephyr")
    assert cfg.eval.name == "leaderboard_v040"
    assert cfg.eval.system_prompt == cfg.generation.system_prompt


# ------------------------------------------------------------------------ the system turn
@pytest.mark.parametrize(
    ("system_prompt", "head"),
    [
        ("null", "<|im_start|>user\n"),
        ("''", "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n"),
        ("'Be brief.'", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"),
    ],
)
def test_chat_prompts_carry_the_configured_system_turn(tiny, tmp_path, spy, system_prompt, head):
    result = score(
        tiny, tmp_path, "eval=embedded_chat", "eval.limit=2", f"eval.system_prompt={system_prompt}"
    )
    contexts = [r.arguments[0] for task in ("arith_gsm_chat", "arith_mc2_chat") for r in spy[task]]
    assert len(contexts) > 2 and all(c.startswith(head) for c in contexts)
    assert all(c.count("<|im_start|>system") == head.count("system") for c in contexts)
    expected = None if system_prompt == "null" else system_prompt.strip("'")
    assert result["summary"]["settings"]["system_prompt"] == expected


def test_eval_system_turn_follows_the_chains_and_only_under_the_chat_template():
    assert compose_config("generation.system_prompt=''").eval.system_prompt == ""
    assert compose_config().eval.system_prompt is None
    plain = compose_config("eval=embedded", "generation.system_prompt=''").eval
    assert "system_prompt" not in eval_spec(plain, plan_tasks(plain))
    chat = compose_config("eval=embedded_chat", "generation.system_prompt=''").eval
    assert eval_spec(chat, plan_tasks(chat))["system_prompt"] == ""
