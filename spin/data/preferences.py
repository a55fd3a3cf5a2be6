"""Preference pairs ``{"prompt", "chosen", "rejected"}`` for the DPO baselines.

Three sources (``baseline.preferences.source``): ``arith`` pairs each SPIN train prompt's
true solution with the same solution after one plausible slip, so DPO sees the same prompts
as SPIN and a preference that is right by construction; ``ultrafeedback`` reads the paper's
HuggingFaceH4/ultrafeedback_binarized (or a local copy in its hub layout); ``jsonl`` reads a
user's file. Every row is validated before training, as for the SFT data, and a pair whose
chosen and rejected texts are the same is dropped (``baseline.preferences.drop_ties``, on by
default): DPO's gradient on it is zero, yet it fills a place in its batch and counts in the
steps of an epoch. The alignment-handbook recipe the paper's DPO row is believed to come from
(61a11a5) kept such pairs, and ``experiment=paper_zephyr`` keeps them too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spin.data.loaders import (
    EXPECTED_MESSAGES,
    _open_dataset,
    _require_columns,
    _text,
    _turns,
    jsonl_rows,
)
from spin.data.mistakes import plausible_mistake
from spin.errors import DataError

log = logging.getLogger(__name__)

SOURCES = ("arith", "ultrafeedback", "jsonl")
ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"
PAIR_FIELDS = ("prompt", "chosen", "rejected")


def arith_preferences(records: list[dict], seed: int) -> list[dict]:
    """One pair per arith record: its solution against a plausible mistake with a different
    final answer, drawn from one ``seed``-ed stream (the same records and seed, the same pairs;
    the first n records' pairs do not depend on the records after them)."""
    rng = random.Random(seed)
    pairs = []
    for index, record in enumerate(records):
        try:
            rejected = plausible_mistake(record["response"], rng)
        except ValueError as error:
            raise DataError(
                f"train record {index}: {error} (baseline.preferences.source='arith' needs "
                "the arith data's worked solutions; use data=arith or another source)"
            ) from error
        pairs.append(
            {"prompt": record["prompt"], "chosen": record["response"], "rejected": rejected}
        )
    return pairs


def _last_assistant(messages: Any, where: str, field: str) -> str:
    """The content of the last assistant turn: the reply the chat's preference is about."""
    turns = _turns(messages, where, field)
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].get("role") == "assistant":
            return _text(turns[index].get("content"), where, f"{field}[{index}].content")
    raise DataError(f"{where}: field {field!r} has no 'assistant' turn ({EXPECTED_MESSAGES})")


def _reply(value: Any, where: str, field: str) -> str:
    """A chosen or rejected response: the text itself, or the last assistant turn of a chat
    (UltraFeedback's layout, and TRL's conversational one in users' files)."""
    if isinstance(value, list):
        return _last_assistant(value, where, field)
    return _text(value, where, field)


def _pair(row: Any, where: str, fields: tuple[str, str, str]) -> dict:
    """One validated pair from a row, raising DataError on the first problem."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: is a {type(row).__name__}, expected a JSON object")
    prompt, chosen, rejected = fields
    return {
        "prompt": _text(row.get(prompt), where, prompt),
        "chosen": _reply(row.get(chosen), where, chosen),
        "rejected": _reply(row.get(rejected), where, rejected),
    }


def _drop_ties(pairs: list[dict], source: str, drop: bool = True) -> list[dict]:
    """``pairs`` less those whose chosen equals rejected (up to surrounding whitespace); all
    of them, counted in the log, when ``drop`` is false."""
    if not drop:
        ties = sum(p["chosen"].strip() == p["rejected"].strip() for p in pairs)
        log.info(
            "Kept %d of %d preference pairs of %s whose chosen equals rejected",
            ties,
            len(pairs),
            source,
        )
        return pairs
    kept = [p for p in pairs if p["chosen"].strip() != p["rejected"].strip()]
    log.info(
        "Dropped %d of %d preference pairs of %s whose chosen equals rejected",
        len(pairs) - len(kept),
        len(pairs),
        source,
    )
    return kept


def load_ultrafeedback(path: str, split: str = "train_prefs", drop_ties: bool = True) -> list[dict]:
    """Pairs of HuggingFaceH4/ultrafeedback_binarized (a hub id or a local copy in the hub
    layout): the ``prompt`` and the last assistant turns of ``chosen`` and ``rejected``; with
    ``drop_ties``, none whose chosen equals rejected."""
    where = f"{path} split {split!r}"
    dataset = _open_dataset(path, split)
    _require_columns(dataset, where, list(PAIR_FIELDS))
    rows = dataset.select_columns(list(PAIR_FIELDS))
    pairs = [_pair(row, f"{where} row {index}", PAIR_FIELDS) for index, row in enumerate(rows)]
    return _drop_ties(pairs, where, drop_ties)


def load_preference_jsonl(
    path: str | Path,
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    drop_ties: bool = True,
) -> list[dict]:
    """Pairs from a user's JSON-lines file; chosen and rejected are texts or chat turn lists;
    with ``drop_ties``, none whose chosen equals rejected."""
    fields = (prompt_field, chosen_field, rejected_field)
    rows = jsonl_rows(path, "baseline.preferences.path")
    pairs = [_pair(row, where, fields) for where, row in rows]
    return _drop_ties(pairs, str(path), drop_ties)


def _subset(pairs: list[dict], n: int | None, seed: int) -> list[dict]:
    """``n`` pairs drawn with ``seed``, in file order. A data set's order can group its sources
    (UltraFeedback's is by origin), so its first rows are no fair sample; a larger ``n``
    keeps the smaller one's pairs (nested data-size ablations)."""
    if n is None or n >= len(pairs):
        return pairs
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    return [pairs[i] for i in sorted(order[:n])]


def _load_source(cfg: Any, train_records: list[dict]) -> list[dict]:
    if cfg.source == "arith":
        return arith_preferences(train_records[: cfg.n], cfg.seed)
    if cfg.source == "ultrafeedback":
        pairs = load_ultrafeedback(cfg.path or ULTRAFEEDBACK, cfg.split, cfg.drop_ties)
        return _subset(pairs, cfg.n, cfg.seed)
    if cfg.source == "jsonl":
        if not cfg.path:
            raise DataError(
                "baseline.preferences.path is required for baseline.preferences.source='jsonl'"
            )
        pairs = load_preference_jsonl(
            cfg.path, cfg.prompt_field, cfg.chosen_field, cfg.rejected_field, cfg.drop_ties
        )
        return _subset(pairs, cfg.n, cfg.seed)
    raise DataError(
        f"baseline.preferences.source={cfg.source!r} is not allowed; "
        f"expected one of {', '.join(SOURCES)}"
    )


def load_preferences(cfg: Any, train_records: list[dict]) -> list[dict]:
    """The DPO baseline's pairs for the ``baseline.preferences`` config section; arith pairs
    are built on ``train_records``, the SPIN train split, so DPO sees SPIN's prompts."""
    if cfg.n is not None and cfg.n < 1:
        raise DataError(
            f"baseline.preferences.n={cfg.n}: expected a positive number of pairs, or null for all"
        )
    pairs = _load_source(cfg, train_records)
    if not pairs:
        raise DataError(
            f"baseline.preferences.source={cfg.source!r} (path={cfg.path!r}) gave no usable "
            "preference pairs"
        )
    log.info(
        "Loaded %d preference pairs from baseline.preferences.source=%s", len(pairs), cfg.source
    )
    return pairs
