"""``seed`` as a sweep axis: it moves the seeds of everything after the start model, and the
report pools jobs that differ only by seed into one row per setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import artifact_events, job_dirs, train_in_process

from spin.reporting import collect_rows, write_report
from spin.reporting.seeds import pool_seeds, seed_interval


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chain, iteration 0, for seeds 0 and 1 (one sweep) under one root."""
    root = tmp_path_factory.mktemp("seeds")
    train_in_process("-m", "experiment=tiny", "seed=0,1", f"paths.root={root}")
    return root


def built(root: Path, kind: str) -> set[str]:
    return {e["key"] for e in artifact_events(root) if e["kind"] == kind}


def test_a_seed_moves_training_but_shares_the_start_model_and_greedy_generations(seed_sweep):
    specs = [
        json.loads(p.read_text()) for p in (seed_sweep / "artifacts" / "model").glob("*/spec.json")
    ]
    trained = sorted(s["trainer"]["seed"] for s in specs if "loss" in s)
    assert trained == [42, 43]  # trainer.seed 42, moved by seeds 0 and 1
    assert len(built(seed_sweep, "generations")) == 1  # greedy: one set for both seeds
    settings = [
        json.loads((j / "report.json").read_text())["settings"] for j in job_dirs(seed_sweep)
    ]
    assert sorted(s["seed"] for s in settings) == [0, 1]


def test_the_report_pools_seeds_into_a_mean_with_intervals(seed_sweep, tmp_path):
    jobs = job_dirs(seed_sweep)
    per_seed = {}
    for job in jobs:
        report = json.loads((job / "report.json").read_text())
        (row,) = [r for r in report["rows"] if r["kind"] == "spin"]
        per_seed[report["settings"]["seed"]] = row["scores"]
    rows = pool_seeds(collect_rows([seed_sweep]))
    (spin,) = [r for r in rows if r.kind == "spin"]
    assert spin.name == "SPIN iteration 0 (2 seeds)"
    for key, value in spin.scores.items():
        assert value == pytest.approx((per_seed[0][key] + per_seed[1][key]) / 2)
    written = write_report(collect_rows([seed_sweep]), tmp_path)
    assert tmp_path / "seeds.md" in written
    assert "| SPIN iteration 0 (2 seeds) |" in (tmp_path / "table.md").read_text()
    text = (tmp_path / "seeds.md").read_text()
    key = "average"
    values = [100 * per_seed[s][key] for s in (0, 1)]
    low, high = seed_interval(values)
    # Two seeds: mean +- t(0.975, 1) * |a - b| / 2, with t(0.975, 1) = 12.706.
    assert high - np.mean(values) == pytest.approx(12.706 * abs(values[0] - values[1]) / 2, 1e-3)
    assert (
        f"0: {values[0]:.2f}, 1: {values[1]:.2f} | {np.mean(values):.2f} [{low:.2f}, {high:.2f}]"
        in text
    )
    # The paired interval against SFT is over the documents, each averaged over the seeds.
    assert "SPIN iteration 0 (2 seeds)" in (tmp_path / "changes.md").read_text()
