"""``eval=leaderboard_v040`` sends the model the token ids lm-eval 46c7966 sends.

tests/fixtures/lm_eval_v040/token_ids.json holds, for every request of the six leaderboard
tasks (MMLU's 57 subjects each) on the local fixtures, the ids 46c7966's own HFLM handed the
model: context and continuation ids of each loglikelihood request, prompt ids, stop
sequences and budget of each generation (written by make_token_ids.py beside it, with
46c7966 on the path). Here the same fixtures go through the project's scoring with the same
tiny model and a tokenizer that adds BOS by default, as Mistral's does; the ids are caught
where a loglikelihood batch and a greedy generation receive them, so the model never runs.
tests/test_fewshot.py compares the request strings; a tokenizer's BOS token is invisible
there. The same run checks that MMLU
is averaged as 46c7966 averaged it, over its documents.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from typing import Any

import datasets
import pytest
from conftest import ROOT, compose_config, on_fixtures

import evaluation.model
from evaluation import TaskPlan, eval_spec, plan_tasks, prepare, run_tasks
from evaluation.errors import EvalConfigError
from evaluation.runner import LoadedModel
from evaluation.summary import task_score
from spin.models import build_tiny, build_tiny_tokenizer

GOLDEN = json.loads((ROOT / "tests" / "fixtures" / "lm_eval_v040" / "token_ids.json").read_text())
# Mistral-7B's max_position_embeddings, as the golden file's model claims: nothing is cut.
POSITIONS = 32768
HEAD = 4


def digest(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def context_record(ids: list[int]) -> list[Any]:
    """As make_token_ids.py keeps a context: length, first ids, digest of all."""
    return [len(ids), list(ids[:HEAD]), digest(ids)]


def sent_ids(
    patch: pytest.MonkeyPatch, tmp_path, *overrides: str
) -> tuple[dict[str, list], dict[str, Any]]:
    """Per leaf task, the ids the project's scoring hands the model under ``overrides``, in
    the golden file's order: [context ids, continuation ids] per loglikelihood request,
    {context, until, max_gen_toks} per generation, with the context's ids in full; and the
    scoring's results (every loglikelihood is 0, so every first choice is taken)."""
    pairs: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    prompts: list[dict[str, Any]] = []
    requests: dict[str, list] = defaultdict(list)

    def loglikelihood_tokens(self, new_requests, *args, **kwargs):
        for strings, context_ids, continuation_ids in new_requests:
            pairs[tuple(strings)] = (list(context_ids), list(continuation_ids))
        return [(0.0, False)] * len(new_requests)

    def greedy_until(model, prompt_ids, max_new_tokens, stops, *args):
        for ids in prompt_ids:
            prompts.append({"context": ids, "until": list(stops), "max_gen_toks": max_new_tokens})
        return [[] for _ in prompt_ids]

    def seen(method):
        def record(self, batch, disable_tqdm=False):
            for request in batch:
                requests[request.task_name].append(request)
            return method(self, batch, disable_tqdm)

        return record

    patch.setattr(LoadedModel, "_loglikelihood_tokens", loglikelihood_tokens)
    patch.setattr(evaluation.model, "greedy_until", greedy_until)
    patch.setattr(LoadedModel, "loglikelihood", seen(LoadedModel.loglikelihood))
    patch.setattr(LoadedModel, "generate_until", seen(LoadedModel.generate_until))
    # datasets keys a local folder's cache by its layout: a private cache is never stale.
    patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")

    model, _ = build_tiny(seed=0)
    model.config.max_position_embeddings = POSITIONS
    cfg = compose_config("eval=leaderboard_v040", *on_fixtures(), *overrides)
    prepared = prepare(plan_tasks(cfg.eval), tmp_path / "work")
    result = run_tasks(prepared, model, build_tiny_tokenizer(adds_bos=True), cfg.eval)

    sent: dict[str, list] = {}
    for task, instances in requests.items():
        if instances[0].request_type == "generate_until":
            assert len(prompts) == len(instances)  # the one generative task
            sent[task] = prompts
            continue
        ordered = sorted(instances, key=lambda r: (r.doc_id, r.idx))
        sent[task] = [list(pairs[tuple(r.args)]) for r in ordered]
    return sent, result


def as_recorded(sent: dict[str, list], drop: int = 0) -> dict[str, list]:
    """``sent`` as the golden file records it, less the first ``drop`` ids of each context."""
    recorded = {}
    for task, requests in sent.items():
        if task == "gsm8k":
            prompts = [r | {"context": context_record(r["context"][drop:])} for r in requests]
            recorded[task] = sorted(prompts, key=json.dumps)  # in no request's order
        else:
            recorded[task] = [[context_record(c[drop:]), cont] for c, cont in requests]
    return recorded


@pytest.fixture(scope="module")
def as_v040(tmp_path_factory) -> tuple[dict[str, list], dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        return sent_ids(patch, tmp_path_factory.mktemp("v040"))


@pytest.fixture(scope="module")
def as_lm_eval_now(tmp_path_factory) -> dict[str, list]:
    """The same preset with BOS and stops as lm-eval now has them: the BOS token left to
    the tokenizer, the EOS token's text added to the stops."""
    with pytest.MonkeyPatch.context() as patch:
        overrides = ("eval.add_bos_token=null", "eval.eos_stop=true")
        return sent_ids(patch, tmp_path_factory.mktemp("now"), *overrides)[0]


def test_the_golden_files_tokenizer_is_this_one_and_adds_bos():
    tokenizer = build_tiny_tokenizer(adds_bos=True)
    probe = GOLDEN["tokenizer"]
    assert tokenizer.encode(probe["text"]) == probe["ids"]
    assert probe["ids"][0] == tokenizer.bos_token_id
    assert GOLDEN["max_length"] == POSITIONS


def test_v040_preset_sends_the_token_ids_lm_eval_0_4_0_sent(as_v040):
    expected = GOLDEN["tasks"]
    assert len(expected) == 62  # five tasks and MMLU's 57 subjects
    sent = as_recorded(as_v040[0])
    assert sorted(sent) == sorted(expected)
    for task, records in expected.items():
        assert sent[task] == records, task


def test_lm_eval_now_puts_bos_before_every_input_and_eos_among_the_stops(as_lm_eval_now):
    tokenizer = build_tiny_tokenizer(adds_bos=True)
    expected = GOLDEN["tasks"]
    contexts = [
        r["context"] if task == "gsm8k" else r[0]
        for task, requests in as_lm_eval_now.items()
        for r in requests
    ]
    assert contexts and all(ids[0] == tokenizer.bos_token_id for ids in contexts)
    with_bos = as_recorded(as_lm_eval_now)
    without_bos = as_recorded(as_lm_eval_now, drop=1)
    for task, records in expected.items():
        assert with_bos[task] != records, task  # what the golden test catches
        if task != "gsm8k":
            assert without_bos[task] == records, task  # the BOS token and nothing else
    stops = [prompt["until"] for prompt in without_bos["gsm8k"]]
    assert stops == [[*p["until"], tokenizer.eos_token] for p in expected["gsm8k"]]
    assert [p | {"until": None} for p in without_bos["gsm8k"]] == [
        p | {"until": None} for p in expected["gsm8k"]
    ]


# ------------------------------------------------------------------ MMLU as 46c7966 averaged
def test_v040_preset_averages_mmlu_over_its_documents(as_v040):
    """46c7966 weighted each subject by its number of documents (evaluator.py, the group
    aggregation), as lm-eval's own mmlu row still does; eval=leaderboard takes the plain
    mean over subjects (tests/test_evaluation.py)."""
    result = as_v040[1]
    mmlu = result["summary"]["tasks"]["mmlu"]
    output = next(o for o in result["lm_eval"].values() if "mmlu" in o["results"])
    # Every choice scores 0, so the first is taken: right for the 56 one-question subjects
    # (answer A), wrong for abstract_algebra's three (answers B, C, D).
    assert mmlu["n"] == 59 and mmlu["subtasks"] == 57
    assert mmlu["value"] == pytest.approx(56 / 59)
    assert mmlu["value"] == pytest.approx(output["results"]["mmlu"]["acc,none"])
    assert mmlu["value"] != pytest.approx(56 / 57)  # the plain mean over subjects
    # one list of every document's value, whose plain mean is the score
    assert len(mmlu["items"]) == 59 and sum(mmlu["items"]) / 59 == pytest.approx(mmlu["value"])
    assert result["summary"]["settings"]["group_average"] == "documents"


def test_a_group_averaged_over_documents_weights_leaves_by_their_size():
    plan = TaskPlan("g", "g", 0, "acc,none")
    output = {
        "group_subtasks": {"g": ["b", "a"]},
        "results": {
            "a": {"acc,none": 1.0, "acc_stderr,none": 0.1},
            "b": {"acc,none": 0.0, "acc_stderr,none": 0.2},
        },
        "n-samples": {"a": {"effective": 3}, "b": {"effective": 1}},
        "n-shot": {"a": 0, "b": 0},
        "items": {"a": {"acc,none": [1, 1, 1]}, "b": {"acc,none": [0]}},
    }
    by_subtasks = task_score(plan, output)
    assert (by_subtasks["value"], by_subtasks["items"]) == (0.5, {"a": [1, 1, 1], "b": [0]})
    assert by_subtasks["stderr"] == pytest.approx(math.hypot(0.1, 0.2) / 2)
    by_documents = task_score(plan, output, by_documents=True)
    assert (by_documents["value"], by_documents["items"]) == (0.75, [1, 1, 1, 0])
    assert by_documents["stderr"] == pytest.approx(math.hypot(3 * 0.1, 0.2) / 4)
    assert by_documents["n"] == by_subtasks["n"] == 4


def test_group_average_is_checked_and_keys_only_scores_it_changes():
    with pytest.raises(EvalConfigError, match=r"eval.group_average='leaves'"):
        plan_tasks(compose_config("eval.group_average=leaves").eval)
    plain = compose_config("eval=leaderboard").eval
    spec = eval_spec(plain, plan_tasks(plain))
    assert not {"add_bos_token", "eos_stop", "group_average"} & set(spec)
    v040 = compose_config("eval=leaderboard_v040").eval
    spec = eval_spec(v040, plan_tasks(v040))
    assert (spec["add_bos_token"], spec["eos_stop"], spec["group_average"]) == (
        False,
        False,
        "documents",
    )
