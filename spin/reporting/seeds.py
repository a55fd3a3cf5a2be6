"""Jobs that differ only by ``seed``, pooled into one row per setting (seeds.md).

A seed sweep (``seed=0,1``) trains one model per seed; the table wants the setting, not
the seed. Rows of the same kind, iteration and settings but for ``seed`` become one row:
its scores are the mean over seeds, and its per-document values the mean over seeds of each
document's value, so the paired intervals against SFT (spin/reporting/significance.py)
use every seed's answers to the same documents. How far the seeds themselves spread is a
different noise: seeds.md gives each seed's scores and a t interval of the mean over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import stats

from spin.reporting.collect import Row
from spin.reporting.job_table import decimals, scale
from spin.reporting.significance import LEVEL
from spin.reporting.tables import column_header, score_columns

SEED = "seed"


def _setting(row: Row) -> str:
    """What identifies a row's setting across seeds."""
    settings = {k: v for k, v in row.settings.items() if k != SEED}
    return json.dumps([row.kind, row.iteration, row.label, settings], sort_keys=True)


def _suffix_without_seed(suffix: str) -> str:
    return ", ".join(p for p in suffix.split(", ") if p and not p.startswith(f"{SEED}="))


def _mean_items(values: Sequence[Any]) -> Any:
    """Each document's mean over seeds; a group task's leaves one by one."""
    if isinstance(values[0], dict):
        return {leaf: _mean_items([v[leaf] for v in values]) for leaf in values[0]}
    return np.mean(np.asarray(values, dtype=float), axis=0).tolist()


def _mean_known(values: Sequence[float | None]) -> float | None:
    """A cost per seed: the mean of the known values (a reused stage reports none)."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _pool(rows: Sequence[Row]) -> Row:
    """One row for the seeds of one setting."""
    first = rows[0]
    scores = {k: float(np.mean([r.scores[k] for r in rows])) for k in first.scores}
    shared = [k for k in first.items if all(k in r.items for r in rows)]
    costs = {k: _mean_known([r.costs.get(k) for r in rows]) for k in first.costs}
    seeds = sorted(r.settings.get(SEED, 0) for r in rows)
    suffix = ", ".join(p for p in (_suffix_without_seed(first.suffix), f"{len(rows)} seeds") if p)
    return replace(
        first,
        model_key="+".join(r.model_key for r in rows),
        scores=scores,
        items={k: _mean_items([r.items[k] for r in rows]) for k in shared},
        costs=costs,
        settings={k: v for k, v in first.settings.items() if k != SEED} | {SEED: seeds},
        suffix=suffix,
        stderr={},
        seeds=tuple(rows),
    )


def pool_seeds(rows: Sequence[Row]) -> list[Row]:
    """``rows`` with those that differ only by seed pooled (:func:`_pool`), in order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(_setting(row), []).append(row)
    pooled = []
    for row in rows:
        group = groups[_setting(row)]
        if len(group) == 1:
            pooled.append(row)
        elif row is group[0]:
            pooled.append(_pool(group))
    return pooled


def seed_interval(values: Sequence[float]) -> tuple[float, float]:
    """The t interval of the mean of ``values`` (one per seed) at the reports' level."""
    mean = float(np.mean(values))
    half = stats.t.ppf(0.5 + LEVEL / 2, len(values) - 1) * stats.sem(values)
    return mean - half, mean + half


def seeds_markdown(rows: Sequence[Row]) -> str | None:
    """Per pooled row and score: every seed's value, the mean and its interval over seeds;
    None when no row pools seeds."""
    pooled = [row for row in rows if row.seeds]
    if not pooled:
        return None
    keys = score_columns(rows)
    lines = [
        "# Scores per seed",
        "",
        f"Mean over seeds with its {100 * LEVEL:g}% t interval over seeds (the seeds' own "
        "spread; the paired intervals in changes.md are over documents, with each document's "
        "value averaged over seeds).",
        "",
        "| Model | Score | Per seed | Mean [interval] |",
        "| :--- | :--- | :--- | ---: |",
    ]
    for row in pooled:
        for key in keys:
            values = [scale(key) * s.scores[key] for s in row.seeds if key in s.scores]
            if len(values) != len(row.seeds):
                continue
            low, high = seed_interval(values)
            seeds = [s.settings.get(SEED, 0) for s in row.seeds]
            d = decimals(key)
            per_seed = ", ".join(f"{n}: {v:.{d}f}" for n, v in zip(seeds, values, strict=True))
            lines.append(
                f"| {row.name} | {column_header(key, keys)} | {per_seed} | "
                f"{np.mean(values):.{d}f} [{low:.{d}f}, {high:.{d}f}] |"
            )
    return "\n".join(lines) + "\n"
