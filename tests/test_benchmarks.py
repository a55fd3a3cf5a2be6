"""The benchmarks drive the pipeline's and the trainer's own code, so a change there can break
them without any other test noticing: each is run here as a user runs it, on small settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT


def run_benchmark(name: str, *args: str) -> str:
    """Run ``benchmarks/bench_<name>.py`` without waiting for a quiet machine; its stdout."""
    env = {**os.environ, "BENCH_MAX_WAIT_S": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"bench_{name}.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, f"bench_{name}.py failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_iteration_benchmark_reports_every_stage(tmp_path):
    out = run_benchmark("iteration", "--quick", "experiment=tiny", f"paths.root={tmp_path}")
    for stage in ("generation", "reference", "training", "evaluation"):
        assert re.search(rf"^{stage}\s+\d+\.\d", out, re.MULTILINE), out
    assert re.search(r"^RATIO iteration \d+\.\d s wall; .* at \d+\.\d% of the", out, re.M), out
    # Every stage was built under the given root, none reused from elsewhere.
    assert (tmp_path / "artifacts").is_dir()


def test_scoring_benchmark_scores_both_ways_alike(tmp_path):
    out = run_benchmark("scoring", "--quick", "experiment=tiny", f"paths.root={tmp_path}")
    assert re.search(r"^project  run 1: .* s, peak \d+\.\d+ GB", out, re.MULTILINE), out
    assert re.search(r"^hflm     run 1: ", out, re.MULTILINE), out
    assert "scores agree to 1e-06: yes" in out, out
    assert re.search(r"^RATIO scoring time project/hflm \d+\.\d+ ", out, re.MULTILINE), out


def test_training_benchmark_gives_every_contender_the_same_mean_place():
    """bench_training's order over repeats: forward, then reversed, so the contender that
    would always run first on the quietest machine no longer does."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_training import CONTENDERS
    from common import interleaved

    order = interleaved(CONTENDERS, 4)
    assert [name for _, name in order[:6]] == [*CONTENDERS, *reversed(CONTENDERS)]
    places = {name: [i % 3 for i, (_, n) in enumerate(order) if n == name] for name in CONTENDERS}
    assert {sum(p) / len(p) for p in places.values()} == {1.0}
    assert [repeat for repeat, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["training", "generation"])
def test_quick_benchmark_ends_with_its_ratio(name):
    if name == "training":
        pytest.importorskip("trl")  # its peer, the bench extra
    out = run_benchmark(name, "--quick")
    assert re.search(rf"^RATIO {name} .*\d+\.\d+x", out, re.MULTILINE), out
