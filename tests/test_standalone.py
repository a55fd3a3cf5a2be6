"""evaluate.py scores the model ``model.path`` names, or stops: a path that is neither a local
model directory nor a hub id the job can load never falls back to another model, and every
scoring names the model it scored (printed, in results.json and in the run's summary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_entry

from spin.models import build_tiny
from spin.tracking import read_metrics

PINNED = "0123456789abcdef0123456789abcdef01234567"
MAIN = "fedcba9876543210fedcba9876543210fedcba98"
QUICK = ["eval=embedded", "eval.limit=2", "eval.max_new_tokens=4", "logger=none"]


def hub_cache(root: Path, repo_id: str, snapshots: dict[str, int | None], main: str) -> Path:
    """A Hugging Face cache holding ``repo_id`` in the hub's layout: per revision a snapshot
    of a tiny model built with that seed, or with None a snapshot whose weights are damaged;
    ``main`` is the revision the hub's main branch points at."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    for revision, seed in snapshots.items():
        model, tokenizer = build_tiny(seed=seed or 0)
        model.save_pretrained(repo / "snapshots" / revision)
        tokenizer.save_pretrained(repo / "snapshots" / revision)
        if seed is None:
            (repo / "snapshots" / revision / "model.safetensors").write_bytes(b"damaged")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(main)
    return root


@pytest.mark.parametrize(
    "path", ["/no/such/checkpoint", "UCLA-AGI/zephyr-7b-sft-full-SPIN-iter0", "empty-dir"]
)
def test_a_path_that_is_no_model_stops_before_any_work(path, tmp_path):
    if path == "empty-dir":
        path = str(tmp_path / "empty")
        Path(path).mkdir()
    root = tmp_path / "outputs"
    # The default model group (SmolLM2 from GGUF), which the old code scored instead.
    proc = run_entry(
        "evaluate.py",
        f"model.path={path}",
        *QUICK,
        f"paths.root={root}",
        check=False,
        env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )
    message = proc.stdout + proc.stderr
    assert proc.returncode == 2, message
    assert f"model.path='{path}'" in message and "Expected a local model directory" in message
    if path.startswith("UCLA-AGI"):
        assert "not in the local Hugging Face cache" in message
        assert f"hf download {path}" in message
    assert not (root / "artifacts").exists()  # nothing converted, nothing scored


def test_a_hub_id_is_scored_at_its_revision_under_any_model_group(tmp_path):
    # The main branch's weights are damaged: only the pinned revision loads.
    cache = hub_cache(tmp_path / "hub", "org/tiny", {PINNED: 1, MAIN: None}, main=MAIN)
    root = tmp_path / "outputs"
    proc = run_entry(
        "evaluate.py",
        "model.path=org/tiny",
        f"model.revision={PINNED}",
        *QUICK,
        f"paths.root={root}",
        env={"HF_HUB_CACHE": str(cache)},
    )
    results = [json.loads(p.read_text()) for p in root.glob("artifacts/eval/*/results.json")]
    assert len(results) == 1
    identity = results[0]["summary"]["model"]
    assert identity["path"] == "org/tiny" and identity["revision"] == PINNED
    assert f"Model: org/tiny (hub id at revision {PINNED}; key {identity['key']})" in proc.stdout
    assert not (root / "artifacts" / "model").exists()  # the default start model was not made
    job = next(root.rglob("metrics.jsonl")).parent
    summary = [r for r in read_metrics(job) if r["type"] == "summary"][-1]
    assert summary["model"] == identity
    assert summary["final/average"] == pytest.approx(results[0]["summary"]["average"])
