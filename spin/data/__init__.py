"""The SFT data a SPIN chain trains and evaluates on: sources, validation and formatting.

:func:`load_splits` turns the ``data`` config section into train and test records plus a
fingerprint of their content, so artifacts keyed by it are rebuilt when the data changes
(a user edits their file) even though the config did not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from spin.data.arith import extract_answer, generate_arith
from spin.data.formatting import PromptFormatter
from spin.data.loaders import deduplicate, load_hf, load_jsonl, load_ultrachat
from spin.data.mistakes import plausible_mistake
from spin.data.preferences import (
    arith_preferences,
    load_preference_jsonl,
    load_preferences,
    load_ultrafeedback,
)
from spin.data.released import load_given_pairs
from spin.data.world import generate_world
from spin.errors import DataError

__all__ = [
    "PromptFormatter",
    "Splits",
    "arith_preferences",
    "extract_answer",
    "fingerprint",
    "generate_arith",
    "load_given_pairs",
    "load_preference_jsonl",
    "load_preferences",
    "load_splits",
    "load_ultrafeedback",
    "plausible_mistake",
]

log = logging.getLogger(__name__)

DEFAULT_ARITH_TRAIN = 256
DEFAULT_ARITH_TEST = 100
DEFAULT_WORLD_TEST = 32
HOLDOUT_SHARE = 0.05


def fingerprint(records: list[dict]) -> str:
    """A content hash that is independent of dict key order."""
    payload = json.dumps(records, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Splits:
    """Train and test records with content hashes, so an artifact that depends on one
    split (generations on train, scores on test) is keyed by that split alone."""

    train: list[dict]
    test: list[dict]

    @cached_property
    def train_fingerprint(self) -> str:
        return fingerprint(self.train)

    @cached_property
    def test_fingerprint(self) -> str:
        return fingerprint(self.test)

    @property
    def fingerprint(self) -> str:
        return fingerprint([{"train": self.train_fingerprint, "test": self.test_fingerprint}])


def _jsonl_file(cfg: Any, split: str) -> Path:
    """A file path is the data itself; a directory holds one ``<split>.jsonl`` per split."""
    path = Path(cfg.path)
    return path / f"{split}.jsonl" if path.is_dir() else path


def _load_split(cfg: Any, split: str) -> list[dict]:
    if cfg.source == "jsonl":
        return load_jsonl(
            _jsonl_file(cfg, split), cfg.prompt_field, cfg.response_field, cfg.messages_field
        )
    if cfg.source == "hf":
        return load_hf(cfg.path, split, cfg.prompt_field, cfg.response_field, cfg.messages_field)
    if cfg.source == "ultrachat":
        return load_ultrachat(cfg.path, split)
    raise DataError(
        f"data.source={cfg.source!r} is not allowed; expected one of arith, jsonl, hf, ultrachat"
    )


def _drop_duplicates(
    train: list[dict], test: list[dict] | None
) -> tuple[list[dict], list[dict] | None]:
    """Keep each prompt once per split, and out of train when it is a test prompt (leakage)."""
    train, dropped = deduplicate(train)
    log.info("Deduplication dropped %d of %d train records", dropped, dropped + len(train))
    if test is None:
        return train, None
    test, dropped = deduplicate(test)
    log.info("Deduplication dropped %d of %d test records", dropped, dropped + len(test))
    test_prompts = {r["prompt"].strip() for r in test}
    kept = [r for r in train if r["prompt"].strip() not in test_prompts]
    log.info("Dropped %d train records whose prompt is also a test prompt", len(train) - len(kept))
    return kept, test


def _hold_out(records: list[dict], cfg: Any) -> tuple[list[dict], list[dict]]:
    """Shuffle with the data seed and keep the last ``n_test`` (default 5%, at least 1) as test."""
    shuffled = list(records)
    random.Random(cfg.seed).shuffle(shuffled)
    n_test = cfg.n_test if cfg.n_test is not None else max(1, round(len(shuffled) * HOLDOUT_SHARE))
    if n_test >= len(shuffled):
        raise DataError(
            f"data.n_test={n_test} leaves no training records: data.path={cfg.path!r} "
            f"has {len(shuffled)} usable records"
        )
    return shuffled[:-n_test], shuffled[-n_test:]


def _load_user_data(cfg: Any) -> tuple[list[dict], list[dict]]:
    if not cfg.path:
        raise DataError(f"data.path is required for data.source={cfg.source!r}")
    if cfg.test_split and cfg.source == "jsonl" and not Path(cfg.path).is_dir():
        raise DataError(
            f"data.test_split={cfg.test_split!r} needs data.path to be a directory with "
            f"one <split>.jsonl per split; data.path={cfg.path!r} is not a directory"
        )
    train = _load_split(cfg, cfg.split)
    test = _load_split(cfg, cfg.test_split) if cfg.test_split else None
    if cfg.deduplicate:
        train, test = _drop_duplicates(train, test)
    if test is None:
        return _hold_out(train, cfg)
    if not train:
        raise DataError(f"data.path={cfg.path!r} split {cfg.split!r} has no usable records")
    return train, test


def _select(records: list[dict], cfg: Any) -> list[dict]:
    """``data.n_train`` records: the first ones, or (``data.selection=random``) those that
    come first in an order shuffled by ``data.seed``, kept in file order. A larger sample
    thus holds every record of a smaller one with the same seed."""
    if cfg.selection != "random":
        return records[: cfg.n_train]
    order = list(range(len(records)))
    random.Random(cfg.seed).shuffle(order)
    return [records[i] for i in sorted(order[: cfg.n_train])]


def load_splits(cfg: Any) -> Splits:
    """Train and test records for the ``data`` config section (a DataConfig or DictConfig)."""
    if cfg.source == "arith":
        train, test = generate_arith(
            DEFAULT_ARITH_TRAIN if cfg.n_train is None else cfg.n_train,
            DEFAULT_ARITH_TEST if cfg.n_test is None else cfg.n_test,
            cfg.seed,
            list(cfg.difficulty),
        )
    elif cfg.source == "world":
        train, test = generate_world(
            cfg.world,
            DEFAULT_ARITH_TRAIN if cfg.n_train is None else cfg.n_train,
            DEFAULT_WORLD_TEST if cfg.n_test is None else cfg.n_test,
            cfg.seed,
        )
    else:
        train, test = _load_user_data(cfg)
        if cfg.n_train is not None:
            _say_shortfall("n_train", cfg.n_train, len(train), cfg)
            train = _select(train, cfg)
        if cfg.n_test is not None:
            _say_shortfall("n_test", cfg.n_test, len(test), cfg)
            test = test[: cfg.n_test]
    return Splits(train, test)


def _say_shortfall(key: str, asked: int, usable: int, cfg: Any) -> None:
    """Warn when data.<key> asks for more records than the split holds: the run goes on
    with what there is, and says so, since a data-size sweep would otherwise plot two
    points of one size."""
    if asked > usable:
        log.warning(
            "data.%s=%d, but data.path=%r has %d usable %s records (after deduplication and "
            "the held-out test split); using %d",
            key,
            asked,
            cfg.path,
            usable,
            "train" if key == "n_train" else "test",
            usable,
        )
