"""Pair sets on disk: what a SPIN iteration (or DPO) trains on, and its reference.

A pair set is a ``pairs.jsonl`` of ``prompt``, ``real`` and ``generated`` (a generation pass,
or preference pairs with chosen as real and rejected as generated). A reference artifact
holds the tokenised pairs with their reference log-probabilities; the KL-regularised
opponent mixes several such references by weight, pair by pair.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from spin.artifacts import Artifact, write_json

# A reference log-probability is a weighted sum over reference passes (one, weight 1, unless
# the opponent is the KL-regularised mixture).
ReferenceMix = list[tuple[Artifact, float]]


def write_pairs(work: Path, rows: list[dict], stats: dict[str, Any]) -> None:
    """A pair set (``prompt``, ``real``, ``generated``) with its identical-pair statistics."""
    for row in rows:
        row["identical"] = row["generated"].strip() == row["real"].strip()
    Dataset.from_list(rows).to_json(work / "pairs.jsonl")
    stats["identical_fraction"] = sum(r["identical"] for r in rows) / max(len(rows), 1)
    stats["n"] = len(rows)
    if stats.get("seconds") and stats.get("generated_tokens") is not None:
        stats.setdefault("tokens_per_second", stats["generated_tokens"] / stats["seconds"])
    write_json(work / "stats.json", stats)


def read_pairs(gen: Artifact) -> list[dict[str, Any]]:
    with (gen.path / "pairs.jsonl").open() as f:
        return [json.loads(line) for line in f]


def all_pairs(gens: list[Artifact]) -> list[dict[str, Any]]:
    return [row for gen in gens for row in read_pairs(gen)]


def draw_pairs(gens: list[Artifact], seed: int) -> list[dict[str, Any]]:
    """One pair per prompt whose generated side comes from a uniformly drawn pair set."""
    rng = random.Random(seed)
    drawn = []
    for candidates in zip(*(read_pairs(g) for g in gens), strict=True):
        if len({c["prompt"] for c in candidates}) != 1:
            raise ValueError("generation sets to draw from do not hold the same prompts in order")
        drawn.append(rng.choice(candidates))
    return drawn


def mixed_reference(refs: ReferenceMix) -> Dataset:
    """The first reference's pairs with each reference log-probability replaced by the
    weighted sum over ``refs`` (all built from the same pairs in the same order)."""
    pairs = load_from_disk(str(refs[0][0].path / "pairs"))
    if len(refs) == 1 and refs[0][1] == 1.0:
        return pairs
    columns = {}
    for key in ("ref_real_logps", "ref_generated_logps"):
        total = [0.0] * len(pairs)
        for ref, weight in refs:
            values = load_from_disk(str(ref.path / "pairs"))[key]
            if len(values) != len(total):
                raise ValueError(f"reference {ref.key} holds {len(values)} pairs, not {len(total)}")
            total = [acc + weight * v for acc, v in zip(total, values, strict=True)]
        columns[key] = total
    for key, values in columns.items():
        pairs = pairs.remove_columns(key).add_column(key, values)
    return pairs
