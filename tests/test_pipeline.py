"""The iteration chain end to end on the tiny model, run as a user runs it: train.py (its main()
in this process where the test is about what the jobs build)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import artifact_events, job_dirs, run_train, train_in_process

from spin.memory import high_water_bytes, reset_high_water
from spin.tracking import read_metrics

TRAIN_METRICS = {
    "train/loss",
    "train/rewards/real",
    "train/rewards/generated",
    "train/rewards/margins",
    "train/rewards/accuracies",
    "train/logps/real",
    "train/logps/generated",
}


def specs(root: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (root / "artifacts" / kind).glob("*/spec.json")]


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    train_in_process(
        "-m", "experiment=tiny", f"paths.root={root}", "loss.beta=0.05,0.1", "iter=0,1"
    )
    return root


def test_sweep_builds_each_shared_artifact_once(sweep_root):
    built = Counter(e["kind"] for e in artifact_events(sweep_root) if e["built"])
    # start model 1; generations: iteration 0 shared by both betas, iteration 1 per beta;
    # reference: the same; models: one trained per (beta, iteration); eval: start + each model.
    assert built == {"model": 1 + 4, "generations": 1 + 2, "reference": 1 + 2, "eval": 1 + 4}
    on_disk = Counter(p.parent.name for p in (sweep_root / "artifacts").glob("*/*") if p.is_dir())
    assert on_disk == built
    assert not list((sweep_root / "artifacts").glob("*/*.partial"))


def test_rerunning_the_sweep_builds_nothing(sweep_root):
    before = len(artifact_events(sweep_root))
    train_in_process(
        "-m", "experiment=tiny", f"paths.root={sweep_root}", "loss.beta=0.05,0.1", "iter=0,1"
    )
    rerun = artifact_events(sweep_root)[before:]
    assert rerun and not any(e["built"] for e in rerun)


def test_iteration_one_trains_from_iteration_zero_on_both_iterations_pairs(sweep_root):
    models, refs = _by_key(sweep_root, "model"), _by_key(sweep_root, "reference")
    second = [m for m in models.values() if "parent" in models.get(m.get("parent"), {})]
    assert len(second) == 2  # one iteration-1 model per beta
    for spec in second:
        ref = refs[spec["reference"]]
        first = models[spec["parent"]]
        assert ref["model"] == spec["parent"]  # frozen iteration-0 output is the reference
        assert first["loss"]["beta"] == spec["loss"]["beta"]
        assert ref["generations"][1:] == refs[first["reference"]]["generations"]
        stats = sweep_root / "artifacts" / "reference" / spec["reference"] / "stats.json"
        assert json.loads(stats.read_text())["n_pairs"] == 2 * 16


def test_metrics_mirror_holds_the_training_metrics(sweep_root):
    for job in job_dirs(sweep_root):
        rows = [r for r in read_metrics(job) if r["type"] == "metrics"]
        logged = {k for r in rows for k in r}
        assert logged >= TRAIN_METRICS
        iterations = {r["iteration"] for r in rows if "train/loss" in r}
        report = json.loads((job / "report.json").read_text())
        assert iterations == {it["iteration"] for it in report["iterations"]}
        assert any(
            r["type"] == "table" and r["key"] == "generation/samples" for r in read_metrics(job)
        )


def test_every_artifact_holds_the_config_that_made_it(sweep_root):
    for spec in (sweep_root / "artifacts").glob("*/*/spec.json"):
        assert (spec.parent / "config.yaml").is_file()


def test_reported_table_and_locations(tiny_chain_copy, tmp_path):
    # The tiny chain's stages are built already: the job reports them with W&B on.
    proc = run_train("experiment=tiny", f"paths.root={tiny_chain_copy}", "logger=wandb", "iter=0")
    assert "SFT" in proc.stdout and "SPIN iteration 0" in proc.stdout
    assert "W&B run:" in proc.stdout and "Outputs:" in proc.stdout
    assert list(tmp_path.rglob("offline-run-*"))


def test_malformed_data_row_names_line_and_field(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    proc = train_in_process(
        "experiment=tiny", f"paths.root={tmp_path}", "data=jsonl", f"data.path={data}", check=False
    )
    assert proc.returncode != 0
    assert "line 2" in proc.stderr and "response" in proc.stderr


def _by_key(root: Path, kind: str) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text())
        for p in (root / "artifacts" / kind).glob("*/spec.json")
    }


def test_every_stage_records_its_peak_memory(sweep_root):
    if high_water_bytes() is None or not reset_high_water():
        pytest.skip("the kernel offers no resettable peak resident memory here")
    for job in job_dirs(sweep_root):
        report = json.loads((job / "report.json").read_text())
        spin_rows = [row for row in report["rows"] if row["kind"] == "spin"]
        assert spin_rows
        for row in spin_rows:
            peaks = {k: v for k, v in row["costs"].items() if k.endswith("_peak_gb")}
            assert set(peaks) == {
                f"{s}_peak_gb" for s in ("generation", "reference", "train", "eval")
            }
            # A process holding torch and a model is far above 50 MB and far below 24 GB.
            assert all(0.05 < v < 24 for v in peaks.values()), peaks
        logged = {k for r in read_metrics(job) if r["type"] == "metrics" for k in r}
        assert "memory/train_peak_gb" in logged and "memory/eval_peak_gb" in logged
