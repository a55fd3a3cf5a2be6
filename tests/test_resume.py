"""A run killed with SIGKILL mid-stage and run again ends exactly as an uninterrupted run.

Each stage keeps its finished work in its artifact's ``.partial`` directory: generation its
shards, the reference pass its chunks, training its checkpoints, evaluation each few-shot
group's output. On the CPU with fp32 every value is recomputed bit for bit, so the resumed
run's scores, curves, reference log-probabilities and weights equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from datasets import load_from_disk
from safetensors.torch import load_file
from tiny_pairs import make_pairs, tiny_training_args

from spin.logprobs import reference_logps
from spin.models import build_tiny
from spin.trainer import last_checkpoint, train_pairs

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
# Every stage of the tiny chain made long enough (seconds) to be killed half way: many
# small generation shards, one pair per reference batch, two pairs per training step with
# a checkpoint every two steps, an SFT stage, more evaluation documents.
SETTINGS = (
    "experiment=tiny",
    "data.n_train=64",
    "generation.shard_size=4",
    "trainer.ref_batch_size=2",
    "trainer.batch_size=2",
    "trainer.save_steps=2",
    "sft.enabled=true",
    "sft.batch_size=2",
    "eval.limit=8",
)
# Stage -> (artifact kind, finished work inside its .partial directory, a key of the spec
# that picks the artifact among those of its kind, the resumed run's log line reusing it).
STAGES = {
    "generation": ("generations", "shards/shard-*.jsonl", None, r"reused [1-9]\d* shards"),
    "reference": (
        "reference",
        "chunks/chunk-*.json",
        None,
        r"reused [1-9]\d* of \d+ reference chunks",
    ),
    "sft": (
        "model",
        "checkpoints/checkpoint-*/trainer_state.json",
        "sft_data",
        r"Resuming from checkpoint \S+checkpoint-[1-9]",
    ),
    "spin training": (
        "model",
        "checkpoints/checkpoint-*/trainer_state.json",
        "reference",
        r"Resuming from checkpoint \S+checkpoint-[1-9]",
    ),
    "evaluation": ("eval", "by_shots/*.json", None, r"Reusing the stored 0-shot evaluation"),
}


def start_train(root: Path) -> subprocess.Popen:
    """train.py with SETTINGS under ``root``, its output going to ``root/<n>.log``."""
    root.mkdir(exist_ok=True)
    log = root / f"{len(list(root.glob('*.log')))}.log"
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *SETTINGS, f"paths.root={root}"],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen, root: Path) -> str:
    """Wait for a run to end, fail if it failed, return its output."""
    proc.wait(timeout=900)
    output = sorted(root.glob("*.log"))[-1].read_text()
    assert proc.returncode == 0, f"train.py failed:\n{output[-5000:]}"
    return output


def finished_work(root: Path, stage: str) -> list[Path]:
    """What ``stage`` has finished so far in the partial directories of its artifacts."""
    kind, pattern, spec_key, _ = STAGES[stage]
    found = []
    for partial in (root / "artifacts" / kind).glob("*.partial"):
        if spec_key is not None and spec_key not in partial_spec(partial):
            continue
        found += partial.glob(pattern)
    return found


def partial_spec(partial: Path) -> dict:
    """The spec of an artifact being built, or nothing when there is none yet or the build
    has just finished and renamed its folder under the poll's feet."""
    try:
        return json.loads((partial / "spec.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def kill_mid_stage(root: Path, stage: str) -> None:
    """Start train.py and SIGKILL it as soon as ``stage`` has finished some of its work."""
    proc = start_train(root)
    deadline = time.monotonic() + 600
    try:
        while not finished_work(root, stage):
            assert proc.poll() is None, f"train.py ended before the {stage} stage stored work"
            assert time.monotonic() < deadline, f"the {stage} stage stored no work in 600 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert finished_work(root, stage), f"the {stage} stage finished before the kill"


def report(root: Path) -> dict:
    (path,) = root.rglob("report.json")
    return json.loads(path.read_text())


def outcome(root: Path) -> dict:
    """What an uninterrupted and a resumed run must agree on: the report's rows (scores,
    training curves, model keys), the generations, the reference log-probabilities and
    every weight."""
    rows = [
        {k: row[k] for k in ("label", "model_key", "scores", "curves")}
        for row in report(root)["rows"]
    ]
    generations = {
        path.parent.name: path.read_text()
        for path in (root / "artifacts" / "generations").glob("*/pairs.jsonl")
    }
    references = {
        path.parent.name: load_from_disk(str(path)).select_columns(
            ["ref_real_logps", "ref_generated_logps"]
        )[:]
        for path in (root / "artifacts" / "reference").glob("*/pairs")
    }
    weights = {
        str(path.relative_to(root)): load_file(path)
        for path in (root / "artifacts" / "model").rglob("model.safetensors")
    }
    return {"rows": rows, "generations": generations, "references": references, "weights": weights}


def assert_same_outcome(resumed: dict, uninterrupted: dict) -> None:
    assert resumed["rows"] == uninterrupted["rows"]
    assert resumed["generations"] == uninterrupted["generations"]
    assert resumed["references"] == uninterrupted["references"]
    assert resumed["weights"].keys() == uninterrupted["weights"].keys()
    for name, tensors in uninterrupted["weights"].items():
        for key, value in tensors.items():
            assert torch.equal(resumed["weights"][name][key], value), f"{name}: {key} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    finish(start_train(root), root)
    assert any(row["scores"] for row in report(root)["rows"])
    return outcome(root)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_run_killed_mid_stage_resumes_to_the_uninterrupted_result(stage, uninterrupted, tmp_path):
    kill_mid_stage(tmp_path, stage)
    output = finish(start_train(tmp_path), tmp_path)
    assert re.search(STAGES[stage][3], output), f"the rerun did not reuse the {stage} work"
    assert not list((tmp_path / "artifacts").glob("*/*.partial"))
    assert_same_outcome(outcome(tmp_path), uninterrupted)


# ------------------------------------------------------- training alone, fast
TEXTS = [
    (f"What is {a}+{b}?", f"{a}+{b}={a + b}. #### {a + b}", f"#### {a * b + 1}" * (a % 3 + 1))
    for a in range(1, 9)
    for b in range(1, 4)
]
# 24 pairs, two per step, three epochs: 36 steps, a checkpoint every three.
STEPS_PER_EPOCH, EPOCHS, SAVE_STEPS = 12, 3, 3
STEPS = STEPS_PER_EPOCH * EPOCHS


def train_tiny(output_dir: str) -> tuple[torch.nn.Module, list[dict]]:
    """SPIN training of the tiny model on TEXTS, resumed from a checkpoint in ``output_dir``
    if there is one; run in a subprocess by the test below to be killed."""
    model, tokenizer = build_tiny(seed=0)
    pairs = make_pairs(tokenizer, TEXTS)
    real, generated = reference_logps(model, pairs, 4, tokenizer.pad_token_id, desc="reference")
    data = [
        {**pair, "ref_real_logps": r, "ref_generated_logps": g}
        for pair, r, g in zip(pairs, real, generated, strict=True)
    ]
    args = tiny_training_args(
        output_dir,
        2,
        epochs=EPOCHS,
        save_steps=SAVE_STEPS,
        lr_scheduler="linear",
        warmup_ratio=0.1,
    )
    history = train_pairs(
        model,
        tokenizer,
        data,
        args,
        loss_name="sigmoid",
        beta=0.1,
        label_smoothing=0.0,
        nll_weight=0.5,
        resume_from=last_checkpoint(Path(output_dir)),
    )
    return model, history


def test_training_killed_in_a_later_epoch_resumes_to_the_same_weights(tmp_path, caplog):
    """Killed after a checkpoint half way through the second epoch: the resumed run must
    draw that epoch's batches in the order the uninterrupted run did."""
    killed = tmp_path / "killed"
    mid_second_epoch = killed / f"checkpoint-{STEPS_PER_EPOCH + SAVE_STEPS}" / "trainer_state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, test_resume; test_resume.train_tiny(sys.argv[1])",
            str(killed),
        ],
        cwd=Path(__file__).parent,
        env={**ENV, "PYTHONPATH": str(Path(__file__).parent)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not mid_second_epoch.is_file():
            assert proc.poll() is None, f"the training subprocess ended before {mid_second_epoch}"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cut = last_checkpoint(killed)
    step = int(cut.name.split("-")[1])
    assert STEPS_PER_EPOCH < step < STEPS and step % STEPS_PER_EPOCH, f"killed at step {step}"

    with caplog.at_level(logging.INFO, logger="spin.trainer"):
        resumed, resumed_history = train_tiny(str(killed))
    assert f"Resuming from checkpoint {cut}" in caplog.text
    full, full_history = train_tiny(str(tmp_path / "full"))

    losses = [[e["loss"] for e in h if "loss" in e] for h in (resumed_history, full_history)]
    assert len(losses[1]) == STEPS and losses[0] == losses[1]
    for (name, got), want in zip(
        resumed.state_dict().items(), full.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), f"{name} differs"
