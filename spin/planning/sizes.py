"""How much data and how many parameters a config means, found offline: local data is
counted, hub data is sized from the config or reported as unknown."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin.data import Splits, load_preferences, load_splits


@dataclass(frozen=True)
class Count:
    """A size and how it was obtained, so the plan says which numbers are exact."""

    value: float | None
    source: str


def model_size(cfg: DictConfig) -> Count:
    """Parameter count from ``model.n_params``; the tiny model is small enough to build."""
    if cfg.model.n_params is not None:
        return Count(float(cfg.model.n_params), "model.n_params")
    if cfg.model.source == "tiny":
        from spin.models import build_tiny

        model, _ = build_tiny(cfg.model.seed)
        return Count(float(sum(p.numel() for p in model.parameters())), "counted (built)")
    return Count(None, "unknown: set model.n_params for compute estimates")


def is_local(data: Any) -> bool:
    """True when the data can be read without the network."""
    return data.source == "arith" or (data.path is not None and Path(data.path).exists())


def local_splits(data: Any) -> Splits | None:
    """The data's splits when they are local (read, not downloaded), else None."""
    return load_splits(data) if is_local(data) else None


def train_size(cfg: DictConfig, splits: Splits | None) -> Count:
    """Training prompts: counted when the data is local, else ``data.n_train`` or unknown."""
    if splits is not None:
        return Count(len(splits.train), "counted")
    if cfg.data.n_train is not None:
        dropped = "duplicates and test prompts are dropped first" if cfg.data.deduplicate else ""
        return Count(cfg.data.n_train, f"data.n_train; at most{': ' + dropped if dropped else ''}")
    return Count(None, f"unknown: {cfg.data.path} is not local and data.n_train is not set")


def sft_size(cfg: DictConfig, n_train: Count) -> Count:
    """Records of the SFT stage: ``sft.n_train`` of the train split, else all SPIN prompts."""
    if cfg.sft.n_train is None:
        return n_train
    if is_local(cfg.data):
        data = OmegaConf.merge(cfg.data, {"n_train": cfg.sft.n_train})
        return Count(len(load_splits(data).train), "counted")
    return Count(cfg.sft.n_train, "sft.n_train; at most")


def preference_count(cfg: DictConfig, splits: Splits | None, n_train: Count) -> Count:
    """DPO pairs of the baselines, counted with the pipeline's loader when they are local."""
    prefs = cfg.baseline.preferences
    local_file = prefs.path is not None and Path(prefs.path).exists()
    if (prefs.source == "arith" and splits is not None) or (prefs.source != "arith" and local_file):
        return Count(len(load_preferences(prefs, splits.train if splits else [])), "counted")
    if prefs.source == "arith":
        bound = n_train.value if prefs.n is None else prefs.n
        if n_train.value is not None:
            bound = min(bound, n_train.value)
        return Count(bound, "one per train prompt; at most")
    if prefs.n is not None:
        return Count(prefs.n, "baseline.preferences.n; at most")
    return Count(None, f"unknown: {prefs.path or prefs.source} is not counted offline")


def global_batch(cfg: DictConfig, per_device: int) -> int:
    """Items per optimizer step: per device x accumulation x processes."""
    return per_device * cfg.trainer.grad_accumulation * cfg.trainer.world_size


def optimizer_steps(items: float | None, batch: int, epochs: float) -> int | None:
    """Optimizer steps of the Trainer: whole batches per epoch (the last one partial)."""
    if items is None:
        return None
    return math.ceil(epochs * math.ceil(items / batch))


def pair_tokens(cfg: DictConfig) -> int:
    """Bound of one packed SPIN pair: the real sequence plus the generated response."""
    length = cfg.model.max_length
    return length + min(cfg.generation.max_new_tokens, length - 1)
