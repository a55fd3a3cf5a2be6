"""A sweep run by two parallel workers (hydra-joblib-launcher), as a user runs it: every
shared artifact is built once, jobs needing one that is being built wait and reuse it, and
the scores are those of the same sweep run one job at a time."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import artifact_events, job_dirs, run_train

TWO_WORKERS = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
SWEEP = ("experiment=tiny", "loss.beta=0.05,0.1")


def sweep(root: Path, iters: str, *extra: str) -> Path:
    run_train("-m", *SWEEP, f"iter={iters}", f"paths.root={root}", *extra)
    return root


@pytest.fixture(scope="module")
def parallel_root(tmp_path_factory) -> Path:
    return sweep(tmp_path_factory.mktemp("parallel"), "0,1", *TWO_WORKERS, "logger=wandb")


@pytest.fixture(scope="module")
def sequential_root(tmp_path_factory) -> Path:
    return sweep(tmp_path_factory.mktemp("sequential"), "0,1")


def builds(root: Path) -> Counter:
    """How often each artifact (kind, key) was built, over all jobs under ``root``."""
    return Counter((e["kind"], e["key"]) for e in artifact_events(root) if e["built"])


def assert_each_artifact_built_once(root: Path, expected: dict[str, int]) -> None:
    built = builds(root)
    assert set(built.values()) == {1}
    assert Counter(kind for kind, _ in built) == expected
    on_disk = {(p.parent.name, p.name) for p in (root / "artifacts").glob("*/*") if p.is_dir()}
    assert on_disk == set(built)  # and no <key>.partial left behind


def job_span(job: Path) -> tuple[float, float]:
    """When a job started (Hydra saves its config first) and finished (its report)."""
    return (job / ".hydra" / "config.yaml").stat().st_mtime, (job / "report.json").stat().st_mtime


def ran_side_by_side(root: Path) -> bool:
    spans = [job_span(job) for job in job_dirs(root)]
    return any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])


def scores(root: Path) -> dict[str, list[tuple]]:
    """Each job's rows: which model, and its scores."""
    reports = [json.loads((job / "report.json").read_text()) for job in job_dirs(root)]
    return {
        r["overrides"]: [(row["label"], row["model_key"], row["scores"]) for row in r["rows"]]
        for r in reports
    }


def test_two_workers_build_each_shared_artifact_once(parallel_root):
    assert len(job_dirs(parallel_root)) == 4 and ran_side_by_side(parallel_root)
    # start model; generations and reference of iteration 0 shared by both betas, of
    # iteration 1 per beta; one model per (beta, iteration); eval: start + each model.
    expected = {"model": 1 + 4, "generations": 1 + 2, "reference": 1 + 2, "eval": 1 + 4}
    assert_each_artifact_built_once(parallel_root, expected)


def test_a_job_needing_an_artifact_being_built_waits_and_says_so(parallel_root):
    # The two jobs of one beta start together and need the same artifacts in the same
    # order: the one that reuses catches up with the one that builds, and waits.
    logs = "".join((job / "train.log").read_text() for job in job_dirs(parallel_root))
    assert "being built by another job" in logs


def test_two_workers_score_as_one_job_at_a_time(parallel_root, sequential_root):
    parallel = scores(parallel_root)
    assert len(parallel) == 4 and all(rows for rows in parallel.values())
    assert parallel == scores(sequential_root)


def test_each_worker_tracks_its_job(parallel_root):
    for job in job_dirs(parallel_root):
        assert len(list(job.glob("wandb/offline-run-*"))) == 1
    reused = [e for e in artifact_events(parallel_root) if not e["built"]]
    assert {e["kind"] for e in reused} == {"model", "eval", "generations", "reference"}


@pytest.mark.slow
def test_two_workers_sweep_three_iterations_building_each_artifact_once(tmp_path):
    root = sweep(tmp_path, "0,1,2", *TWO_WORKERS)
    assert len(job_dirs(root)) == 6 and ran_side_by_side(root)
    expected = {"model": 1 + 6, "generations": 1 + 4, "reference": 1 + 4, "eval": 1 + 6}
    assert_each_artifact_built_once(root, expected)
