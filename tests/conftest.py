"""Shared fixtures: composing the project's Hydra config and running train.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spin.config import register_schema
from spin.models import build_tiny
from spin.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]

register_schema()

# Local copies of the leaderboard tasks' data sets, in each hub data set's layout.
LEADERBOARD_FIXTURES = ROOT / "tests" / "fixtures" / "eval_leaderboard"
FIXTURE_OF = {
    "arc_challenge": "ai2_arc",
    "truthfulqa_mc2": "truthful_qa",
    "winogrande": "winogrande",
    "gsm8k": "gsm8k",
    "hellaswag": "hellaswag",
    "mmlu": "mmlu",
}


def on_fixtures(*tasks: str) -> list[str]:
    """Overrides that score ``tasks`` (all six by default) on their local fixtures."""
    return [
        f"eval.settings.{task}.dataset_path={LEADERBOARD_FIXTURES / FIXTURE_OF[task]}"
        for task in tasks or FIXTURE_OF
    ]


def compose_config(*overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess, as a user would."""
    return run_entry("train.py", *args, check=check)


def run_entry(
    script: str, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run an entry point (train.py, evaluate.py, ...) in a subprocess, as a user would:
    offline, with ``env`` added to the environment."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_dirs(root: Path) -> list[Path]:
    """The directories of the jobs run under outputs root ``root``."""
    return sorted(p.parent for p in root.rglob("report.json"))


def artifact_events(root: Path) -> list[dict]:
    """Every artifact a job under ``root`` built or reused, from the jobs' metrics mirrors."""
    return [
        rec
        for job in job_dirs(root)
        for rec in read_metrics(job)
        if rec["type"] == "event" and rec["event"] == "artifact"
    ]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tiny model's matrices are too small to gain from threads, and on a busy machine
    competing threads make each call many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """A random-init tiny Llama and its character tokenizer."""
    return build_tiny(seed=0)
