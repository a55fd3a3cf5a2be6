"""The evaluation harness: lm-eval's real task definitions on the tiny model.

The leaderboard tasks run end to end on fixtures in each hub data set's schema and layout
(tests/fixtures/eval_leaderboard), pointed at through ``eval.settings.<task>.dataset_path``,
so shot counts, metrics and the leaderboard average are checked with no network.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from statistics import fmean, stdev

import datasets
import pytest
from conftest import ROOT, compose_config, on_fixtures, run_in_process

from evaluation import plan_tasks, prepare, run_tasks
from evaluation.errors import EvalConfigError
from evaluation.summary import leaves
from evaluation.tasks.utils import process_results_mc2
from spin.data import eval_tasks as embedded_data
from spin.models import build_tiny
from spin.tracking import read_metrics

LEADERBOARD = {
    "arc_challenge": (25, "acc_norm,none"),
    "truthfulqa_mc2": (0, "acc,none"),
    "winogrande": (5, "acc,none"),
    "gsm8k": (5, "exact_match,strict-match"),
    "hellaswag": (10, "acc_norm,none"),
    "mmlu": (5, "acc,none"),
}


def run_script(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


# ----------------------------------------------------------------------------- config
def test_leaderboard_config_is_the_papers_six_tasks():
    plans = plan_tasks(compose_config("eval=leaderboard").eval)
    assert {p.name: (p.num_fewshot, p.metric) for p in plans} == LEADERBOARD
    assert [p.name for p in plans] == list(LEADERBOARD)
    assert not any(p.is_local for p in plans)  # hub data sets: checked before any work


def test_task_subset_keeps_the_leaderboard_settings():
    cfg = compose_config("eval=leaderboard", "eval.tasks=[gsm8k,truthfulqa_mc2]", "eval.limit=3")
    plans = plan_tasks(cfg.eval)
    assert [(p.name, p.num_fewshot) for p in plans] == [("gsm8k", 5), ("truthfulqa_mc2", 0)]
    assert cfg.eval.limit == 3


def test_default_is_the_embedded_tasks_over_shipped_files():
    plans = plan_tasks(compose_config().eval)
    assert [(p.name, p.num_fewshot) for p in plans] == [("arith_gsm", 2), ("arith_mc2", 0)]
    assert all(p.is_local and all(f.is_file() for f in p.data_files.values()) for p in plans)
    assert plan_tasks(compose_config("eval=none").eval) == []


def test_shipped_embedded_files_are_what_the_builder_makes():
    for name, rows in embedded_data.build().items():
        shipped = (embedded_data.DATA_DIR / name).read_text()
        assert shipped == embedded_data.to_jsonl(rows), (
            f"rerun python -m spin.data.eval_tasks ({name})"
        )


def test_embedded_mc2_items_have_true_and_wrong_final_answers():
    from spin.data import extract_answer

    rows = embedded_data.build()["arith_mc2.jsonl"]
    for row in rows:
        choices, labels = row["mc2_targets"]["choices"], row["mc2_targets"]["labels"]
        answers = {extract_answer(c) for c, label in zip(choices, labels, strict=True) if label}
        wrong = {extract_answer(c) for c, label in zip(choices, labels, strict=True) if not label}
        assert len(answers) == 1 and answers.isdisjoint(wrong)


def test_mc2_is_the_normalised_mass_on_true_answers():
    doc = {"mc2_targets": {"labels": [1, 0, 1, 0]}}
    # probabilities 0.4, 0.1, 0.2, 0.3 (scaled by a common factor, which must not matter)
    results = [(v, False) for v in (-1000.0 + 4, -1000.0 + 1, -1000.0 + 2, -1000.0 + 3)]
    import math

    weights = [math.exp(x) for x in (4, 1, 2, 3)]
    expected = (weights[0] + weights[2]) / sum(weights)
    assert process_results_mc2(doc, results)["mc2"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.limit=0", "eval.limit=0"),
        ("eval.settings.arith_gsm.num_fewshot=-1", "num_fewshot=-1"),
        ("eval.tasks=[arith_gsm,arith_gsm]", "more than once"),
    ],
)
def test_bad_eval_settings_name_the_key(override, message):
    with pytest.raises(EvalConfigError, match=message):
        plan_tasks(compose_config(override).eval)


# -------------------------------------------------------------------- lm-eval end to end
@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


@pytest.fixture(scope="module")
def leaderboard_run(tiny, tmp_path_factory):
    cfg = compose_config("eval=leaderboard", "eval.max_new_tokens=4", *on_fixtures())
    plans = plan_tasks(cfg.eval)
    # A private datasets cache: datasets keys a local folder's cache by its layout, not its
    # files' content, so a cache shared across runs could serve edited fixtures stale.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf"))
        prepared = prepare(plans, tmp_path_factory.mktemp("lb"))
        return run_tasks(prepared, *tiny, cfg.eval)


def test_leaderboard_tasks_run_with_their_shots_and_metrics(leaderboard_run):
    summary = leaderboard_run["summary"]
    assert list(summary["tasks"]) == list(LEADERBOARD)
    for name, (shots, key) in LEADERBOARD.items():
        task = summary["tasks"][name]
        assert (task["num_fewshot"], task["key"]) == (shots, key), name
        assert 0.0 <= task["value"] <= 1.0
    assert summary["tasks"]["mmlu"]["subtasks"] == 57
    # Per-document values of the metric: one list per task, one per leaf for the mmlu group.
    gsm8k = summary["tasks"]["gsm8k"]
    assert len(gsm8k["items"]) == gsm8k["n"]
    assert fmean(gsm8k["items"]) == pytest.approx(gsm8k["value"])
    mmlu = summary["tasks"]["mmlu"]
    assert len(mmlu["items"]) == 57 and sum(map(len, mmlu["items"].values())) == mmlu["n"]
    assert fmean(fmean(v) for v in mmlu["items"].values()) == pytest.approx(mmlu["value"])
    # lm-eval gives no stderr for a one-question subject, so mmlu's combined one is unknown.
    assert mmlu["stderr"] is None
    others = [t for t in LEADERBOARD if t != "mmlu"]
    assert all(isinstance(summary["tasks"][t]["stderr"], float) for t in others)
    # lm-eval's own record of the shots it used, per leaf task
    n_shot = {k: v for out in leaderboard_run["lm_eval"].values() for k, v in out["n-shot"].items()}
    assert n_shot["arc_challenge"] == 25 and n_shot["hellaswag"] == 10
    assert n_shot["mmlu_anatomy"] == 5 and n_shot["truthfulqa_mc2"] == 0


def test_average_is_the_leaderboard_average(leaderboard_run):
    summary = leaderboard_run["summary"]
    mmlu_out = next(o for o in leaderboard_run["lm_eval"].values() if "mmlu" in o["results"])
    subjects = leaves("mmlu", mmlu_out["group_subtasks"])
    assert len(subjects) == 57
    by_subject = fmean(mmlu_out["results"][s]["acc,none"] for s in subjects)
    assert summary["tasks"]["mmlu"]["value"] == pytest.approx(by_subject)
    # abstract_algebra has 3 questions and every other subject 1: lm-eval's own mmlu row
    # weights by size, the leaderboard does not.
    assert summary["tasks"]["mmlu"]["n"] == 56 + 3
    assert summary["average"] == pytest.approx(fmean(t["value"] for t in summary["tasks"].values()))


def test_items_are_kept_per_document_and_survive_a_resumed_evaluation(tiny, tmp_path, caplog):
    cfg = compose_config("eval.limit=4", "eval.max_new_tokens=4")
    plans = plan_tasks(cfg.eval)
    store = tmp_path / "by_shots"
    first = run_tasks(prepare(plans, tmp_path / "work"), *tiny, cfg.eval, store)
    tasks = first["summary"]["tasks"]
    assert list(tasks) == ["arith_gsm", "arith_mc2"]
    for name, task in tasks.items():
        assert len(task["items"]) == task["n"] == 4, name
        assert fmean(task["items"]) == pytest.approx(task["value"]), name
        assert task["stderr"] == pytest.approx(stdev(task["items"]) / math.sqrt(4)), name
    assert set(tasks["arith_gsm"]["items"]) <= {0.0, 1.0}
    # The stores hold the items but not lm-eval's samples; the result does not repeat them.
    stored = json.loads((store / "0-shot.json").read_text())
    assert "samples" not in stored and len(stored["items"]["arith_mc2"]["mc2,none"]) == 4
    assert not any("items" in output for output in first["lm_eval"].values())
    # Killed after the 0-shot call: a rerun reuses its store and computes the 2-shot one.
    (store / "2-shot.json").unlink()
    with caplog.at_level(logging.INFO, logger="evaluation.runner"):
        resumed = run_tasks(prepare(plans, tmp_path / "work"), *tiny, cfg.eval, store)
    assert "Reusing the stored 0-shot evaluation" in caplog.text
    assert "Reusing the stored 2-shot" not in caplog.text
    assert resumed["summary"]["tasks"] == tasks


def test_unreachable_hub_dataset_stops_before_any_work(tmp_path):
    proc = run_script(
        "evaluate.py",
        "model=tiny",
        "logger=none",
        "eval=leaderboard",
        "eval.tasks=[hellaswag]",
        f"paths.root={tmp_path}",
        env={"HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")},
    )
    assert proc.returncode == 2, proc.stderr
    message = proc.stdout + proc.stderr
    assert "eval task 'hellaswag'" in message and "Rowan/hellaswag" in message
    assert "eval=embedded" in message and "dataset_path" in message
    assert "Running loglikelihood" not in message
    assert not [p for p in (tmp_path / "artifacts" / "eval").glob("*") if p.is_dir()] or all(
        p.name.endswith(".partial") and not (p / "results.json").exists()
        for p in (tmp_path / "artifacts" / "eval").glob("*")
        if p.is_dir()
    )


# ---------------------------------------------------------------- the chain and standalone
# The chain is the session's shared tiny chain (`train.py experiment=tiny`, whose eval.limit
# is 4); the test that scores into its store takes a copy of its own.


def eval_results(root: Path) -> dict[str, dict]:
    return {
        json.loads((p / "spec.json").read_text())["model"]: json.loads(
            (p / "results.json").read_text()
        )
        for p in (root / "artifacts" / "eval").iterdir()
        if p.is_dir() and not p.name.endswith(".partial")
    }


def trained_model_dir(root: Path) -> Path:
    return next(p.parent for p in (root / "artifacts" / "model").glob("*/model/config.json"))


def test_chain_logs_scores_per_model_and_a_summary_table(tiny_chain):
    chain_root = tiny_chain
    job = next(p.parent for p in chain_root.rglob("report.json"))
    records = read_metrics(job)
    logged = {k for r in records if r["type"] == "metrics" for k in r}
    assert {"start/arith_gsm/exact_match", "start/arith_mc2/mc2", "start/average"} <= logged
    assert {"eval/arith_gsm/exact_match", "eval/arith_mc2/mc2", "eval/average"} <= logged
    table = [r for r in records if r["type"] == "table" and r["key"] == "eval/summary"][-1]
    assert [row[0] for row in table["rows"]] == ["SFT", "SPIN iteration 0"]
    report = json.loads((job / "report.json").read_text())
    heldout = {"arith_nll", "arith_greedy_match"}
    assert set(report["start"]) == {"arith_gsm/exact_match", "arith_mc2/mc2", "average", *heldout}
    for row in report["rows"]:
        scored = {"arith_gsm/exact_match", "arith_mc2/mc2", *heldout}
        assert set(row["items"]) == set(row["stderr"]) == scored
        assert {len(values) for values in row["items"].values()} == {4}
    for result in eval_results(chain_root).values():
        summary = result["summary"]
        assert summary["lm_eval_version"] and summary["seconds"] > 0
        assert summary["settings"]["limit"] == 4
        assert {t["n"] for t in summary["tasks"].values()} == {4}


def test_standalone_scores_equal_the_chains_and_rescoring_does_no_work(tiny_chain_copy, tmp_path):
    chain_root = tiny_chain_copy
    model_dir = trained_model_dir(chain_root)
    key = model_dir.parent.name
    args = ["experiment=tiny", "eval.limit=4", "logger=none", f"model.path={model_dir}"]
    # A fresh store: the standalone command computes the scores itself.
    fresh = run_in_process("evaluate.py", *args, f"paths.root={tmp_path / 'fresh'}", check=False)
    assert fresh.returncode == 0, fresh.stderr
    chain, alone = eval_results(chain_root)[key], eval_results(tmp_path / "fresh")[key]
    assert alone["summary"]["tasks"] == chain["summary"]["tasks"]
    assert f"{100 * chain['summary']['average']:.1f}%" in fresh.stdout
    # The chain's store: the model was scored with these settings already.
    before = len(list((chain_root / "artifacts" / "eval").iterdir()))
    again = run_in_process("evaluate.py", *args, f"paths.root={chain_root}", check=False)
    assert again.returncode == 0, again.stderr
    assert "Running generate_until" not in again.stderr
    assert len(list((chain_root / "artifacts" / "eval").iterdir())) == before
    job = max((chain_root / "runs").rglob("metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    events = [
        r for r in read_metrics(job.parent) if r.get("event") == "artifact" and r["kind"] == "eval"
    ]
    assert events and not any(e["built"] for e in events)


# ------------------------------------------------------------------------ a user's own set
def test_user_jsonl_set_is_scored_through_a_field_mapping(tiny, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"prompt": "What is 2 + 2?", "solution": "2 + 2 = 4\n#### 4"})
        + "\n"
        + json.dumps({"prompt": "What is 3 * 3?", "solution": "9"})
        + "\n"
    )
    cfg = compose_config(
        "eval=jsonl",
        f"eval.settings.user.path={path}",
        "eval.settings.user.fields={question: prompt, answer: solution}",
        "eval.max_new_tokens=4",
    )
    plans = plan_tasks(cfg.eval)
    result = run_tasks(prepare(plans, tmp_path / "work"), *tiny, cfg.eval)
    assert result["summary"]["tasks"]["user"]["n"] == 2
    assert result["summary"]["tasks"]["user"]["metric"] == "exact_match"
    converted = (tmp_path / "work" / "user" / "test.jsonl").read_text().splitlines()
    assert json.loads(converted[1]) == {"question": "What is 3 * 3?", "answer": "#### 9"}


def test_malformed_user_row_names_file_line_and_field(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b"}\n')
    cfg = compose_config("eval=jsonl", f"eval.settings.user.path={path}")
    with pytest.raises(EvalConfigError, match=r"mine.jsonl, line 2: no field 'answer'"):
        prepare(plan_tasks(cfg.eval), tmp_path / "work")
