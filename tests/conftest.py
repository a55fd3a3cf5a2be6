"""Shared fixtures: composing the project's Hydra config and running train.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spin.config import register_schema

ROOT = Path(__file__).resolve().parents[1]

register_schema()


def compose_config(*overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess, as a user would."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def compose_cfg():
    return compose_config
