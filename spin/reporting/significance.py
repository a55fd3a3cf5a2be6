"""Whether a model's change against SFT is more than the noise of the held-out documents.

Both models answered the same documents, so the change is estimated pair by pair: a paired
bootstrap draws the documents with replacement, the same draw for both models, and the 2.5th
and 97.5th percentiles of the resampled change bound its 95% interval. Pairing takes the
documents' own difficulty out of the noise, which unpaired standard errors (about 3.4 points
for exact match on 128 documents) keep in. A group task (MMLU) averaged over its subtasks
scores the plain mean of its leaf tasks, so each leaf is resampled on its own and the leaf
changes averaged; one averaged over its documents (``eval.group_average=documents``) keeps
one list of them, resampled as any task's. The average over tasks likewise resamples each
task independently and averages the task changes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spin.errors import Mismatch
from spin.reporting.collect import Row
from spin.reporting.job_table import is_heldout, scale

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95
AVERAGE = "average"
# Resampled document indices held in memory at once, whatever the number of documents.
MAX_DRAWN = 2_000_000


@dataclass(frozen=True)
class Change:
    """A model's change against its reference on one score, in points, with its interval;
    without an interval, ``reason`` says why."""

    change: float | None = None
    low: float | None = None
    high: float | None = None
    reason: str | None = None

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below 0: a change the documents show."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


Changes = dict[str, dict[str, Change]]
"""Per ``model_key``, per score key (``<task>/<metric>`` or ``average``), the change."""


def _by_leaf(values: list | dict[str, list]) -> dict[str, np.ndarray]:
    """A task's documents per leaf task; a plain task is its own single leaf."""
    leaves = values if isinstance(values, dict) else {"": values}
    return {leaf: np.asarray(docs, dtype=float) for leaf, docs in sorted(leaves.items())}


def _paired_differences(
    model: list | dict[str, list], reference: list | dict[str, list]
) -> dict[str, np.ndarray]:
    """Per leaf, each document's value for the model minus the reference's, matched by
    ``doc_id`` order; raises :class:`Mismatch` when the documents do not pair up."""
    ours, theirs = _by_leaf(model), _by_leaf(reference)
    if ours.keys() != theirs.keys():
        missing = sorted(ours.keys() ^ theirs.keys())
        raise Mismatch(f"leaf tasks differ ({', '.join(missing)} only in one model)")
    for leaf, docs in ours.items():
        where = f" in {leaf}" if leaf else ""
        if len(docs) != len(theirs[leaf]):
            raise Mismatch(
                f"{len(docs)} documents{where} against the reference's {len(theirs[leaf])}"
            )
        if len(docs) == 0:
            raise Mismatch(f"no documents{where}")
    return {leaf: docs - theirs[leaf] for leaf, docs in ours.items()}


def _resampled_means(differences: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean difference over ``RESAMPLES`` draws of the documents with replacement."""
    n = len(differences)
    means = np.empty(RESAMPLES)
    chunk = max(1, MAX_DRAWN // n)
    for start in range(0, RESAMPLES, chunk):
        stop = min(start + chunk, RESAMPLES)
        drawn = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = differences[drawn].mean(axis=1)
    return means


def _task_draws(key: str, differences: dict[str, np.ndarray]) -> np.ndarray:
    """The task's resampled change in points (a held-out NLL's in nats per token): leaves
    drawn independently, then averaged.

    Each task has its own seeded stream (from its key), so a task's interval does not depend
    on which other tasks were scored, and tasks are drawn independently for the average.
    """
    rng = np.random.default_rng([SEED, zlib.crc32(key.encode())])
    return scale(key) * np.mean([_resampled_means(d, rng) for d in differences.values()], axis=0)


def _interval(change: float, draws: np.ndarray) -> Change:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Change(change, float(low) + 0.0, float(high) + 0.0)


def paired_changes(model: Row, reference: Row) -> dict[str, Change]:
    """The model's change against ``reference`` per task with items, and for the average;
    empty when either row has no per-document values (reports written before they were)."""
    if not model.items or not reference.items:
        return {}
    tasks = [k for k in model.scores if k != AVERAGE]
    found: dict[str, Change] = {}
    draws: dict[str, np.ndarray] = {}
    changes: dict[str, float] = {}
    for key in tasks:
        if key not in model.items or key not in reference.items:
            who = model.name if key not in model.items else "the reference"
            found[key] = Change(reason=f"no per-document values for {who}")
            continue
        try:
            differences = _paired_differences(model.items[key], reference.items[key])
        except Mismatch as err:
            found[key] = Change(reason=str(err))
            continue
        changes[key] = scale(key) * float(np.mean([d.mean() for d in differences.values()]))
        draws[key] = _task_draws(key, differences)
        found[key] = _interval(changes[key], draws[key])
    if AVERAGE in model.scores:
        found[AVERAGE] = _average([k for k in tasks if not is_heldout(k)], changes, draws)
    return found


def _average(tasks: Sequence[str], changes: dict[str, float], draws: dict[str, Any]) -> Change:
    """The change of the plain mean over tasks; it needs every task's draws."""
    missing = [k for k in tasks if k not in draws]
    if missing or not tasks:
        return Change(reason=f"no interval for {', '.join(missing) or 'any task'}")
    change = float(np.mean([changes[k] for k in tasks]))
    return _interval(change, np.mean([draws[k] for k in tasks], axis=0))


def all_changes(rows: Sequence[Row]) -> Changes:
    """Per row with a reference (its SFT row) in ``rows``, its paired changes; rows whose
    changes cannot be computed for lack of items are left out."""
    by_key = {row.model_key: row for row in rows}
    found: Changes = {}
    for row in rows:
        reference = by_key.get(row.reference) if row.reference is not None else None
        changes = paired_changes(row, reference) if reference is not None else {}
        if changes:
            found[row.model_key] = changes
    return found
