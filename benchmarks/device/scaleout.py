"""Scale-out parts of the device check, on one GPU: ZeRO-3 and FSDP through accelerate with
one process, LoRA, and QLoRA and vLLM where their packages are installed.

At world size 1 ZeRO-3 and FSDP still shard, gather and save through their own code, and a
run killed after a training checkpoint resumes from it; that is what these parts check, on
the tiny chain. Their first training step must log rewards of 0: the policy is still the
model the reference pass scored, so any other value means the reference pass and the
training disagree.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import manifest
from part_context import Run, Skip, verdict

# Long enough to be killed after a checkpoint: 32 pairs, 2 a step, a checkpoint every 2.
CHAIN = (
    "experiment=tiny",
    "data.n_train=32",
    "trainer.batch_size=2",
    "trainer.save_steps=2",
    "eval=none",
    "logger=none",
)
# |reward| at the first step: beta times a log-probability difference that is rounding
# alone (batches of other shapes in the reference pass and in training).
TOY = ("data.n_train=8",)  # 2 steps on the CPU
REWARD_TOLERANCE = {"bf16": 0.05, "fp32": 1e-4}
ENV = {"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}


def first_rewards(root: Path) -> list[float]:
    """The largest |reward| at the first training step of each model trained under
    ``root`` (the rewards of the real and the generated response)."""
    found = []
    for history in sorted((root / "artifacts" / "model").glob("*/history.json")):
        first = next(e for e in json.loads(history.read_text()) if "loss" in e)
        found.append(max(abs(first["rewards/real"]), abs(first["rewards/generated"])))
    return found


def rewards_verdict(root: Path, precision: str) -> tuple[bool, float]:
    """Whether every first step's rewards are 0 up to rounding, and the largest."""
    largest = max(first_rewards(root), default=math.inf)
    return largest <= REWARD_TOLERANCE[precision], largest


def start(command: list[str], log: Path) -> subprocess.Popen:
    """``command`` in the repository, in a session of its own (a launcher's workers are
    killed with it), its output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            command,
            cwd=manifest.ROOT,
            env={**os.environ, **ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_after_checkpoint(command: list[str], root: Path, log: Path, limit_s: float) -> bool:
    """Start ``command`` and SIGKILL it, workers and all, once training has stored a
    checkpoint; False when it ended first (training too short to kill)."""
    from test_resume import finished_work

    proc = start(command, log)
    deadline = time.monotonic() + limit_s
    try:
        while not finished_work(root, "spin training"):
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return True


def killed_and_resumed(run: Run, mode: str) -> dict:
    """The tiny chain under ``accelerate launch`` with ``conf/accelerate/<mode>.yaml`` and
    one process: killed after its first training checkpoint, run again to the end."""
    from test_resume import STAGES

    root = run.work / "outputs"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        f"conf/accelerate/{mode}.yaml",
        "--num_processes",
        "1",
        "train.py",
        *CHAIN,
        "trainer.precision=bf16",
        f"trainer.distributed={mode}",
        "trainer.world_size=1",
        f"paths.root={root}",
    ]
    killed = kill_after_checkpoint(command, root, run.work / "killed.log", limit_s=240)
    proc = start(command, run.work / "resumed.log")
    proc.wait()
    output = (run.work / "resumed.log").read_text()
    if proc.returncode != 0:
        return {"ok": False, "why": f"the rerun exited with {proc.returncode}: {output[-1500:]}"}
    resumed = bool(re.search(STAGES["spin training"][3], output))
    saved = sorted(str(p.parent.relative_to(root)) for p in root.glob("artifacts/model/*/model"))
    zero, largest = rewards_verdict(root, "bf16")
    checks = {
        "no checkpoint before the kill": not killed,
        "the rerun did not resume from the checkpoint": not resumed,
        "no trained model saved": not saved,
        f"first-step |reward| {largest:.3g}, not 0": not zero,
    }
    return {
        **verdict(checks),
        "killed_after_checkpoint": killed,
        "resumed": resumed,
        "saved_models": saved,
        "first_step_max_abs_reward": largest,
    }


def zero3(run: Run) -> dict:
    if importlib.util.find_spec("deepspeed") is None:
        raise Skip("deepspeed is not installed (the kit carries it: make device-kit)")
    return killed_and_resumed(run, "zero3")


def fsdp(run: Run) -> dict:
    return killed_and_resumed(run, "fsdp")


def adapters(run: Run, lora: str, precision: str) -> dict:
    """The tiny chain's iteration 0 with ``lora=<lora>`` in this process: its first step's
    rewards are 0 (fresh adapters add nothing, so policy and reference agree), and the
    merged model and the adapter are saved."""
    from conftest import compose_config

    from spin.job import run_job

    root = run.work / "outputs"
    extra = ("model.dtype=bfloat16",) if lora == "qlora" else ()
    extra += TOY if run.toy else ()
    cfg = compose_config(
        *CHAIN, f"trainer.precision={precision}", f"lora={lora}", *extra, f"paths.root={root}"
    )
    run_job(cfg, run.work / "job", f"device-{lora}")
    zero, largest = rewards_verdict(root, precision)
    saved = [p.name for p in root.glob("artifacts/model/*/*") if p.name in ("model", "adapter")]
    ok = zero and {"model", "adapter"} <= set(saved)
    return {"ok": ok, "first_step_max_abs_reward": largest, "saved": sorted(saved)}


def lora(run: Run) -> dict:
    return adapters(run, "lora", "fp32" if run.toy else "bf16")


def qlora(run: Run) -> dict:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise Skip(f"bitsandbytes is not installed: {manifest.LEFT_OUT['bitsandbytes']}")
    return adapters(run, "qlora", "bf16")


def vllm(run: Run) -> dict:
    if importlib.util.find_spec("vllm") is None:
        raise Skip(f"vllm is not installed: {manifest.LEFT_OUT['vllm']}")
    from conftest import compose_config

    from spin.job import run_job

    root = run.work / "outputs"
    cfg = compose_config(*CHAIN, "generation.backend=vllm", "iter=0", f"paths.root={root}")
    run_job(cfg, run.work / "job", "device-vllm")
    generated = list(root.glob("artifacts/generations/*/pairs.jsonl"))
    return {"ok": bool(generated), "generation_sets": len(generated)}
