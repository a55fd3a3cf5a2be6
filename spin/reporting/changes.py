"""The changes against SFT with their paired bootstrap intervals (changes.md, changes.csv).

One row per model that has intervals, one column per task and the average, each cell the
change in points and its 95% interval; a cell whose interval excludes 0 is marked ``*``, as
in table.md. Where a model has no interval on a task, a note under the table says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spin.reporting.collect import Row
from spin.reporting.job_table import decimals
from spin.reporting.significance import LEVEL, RESAMPLES, SEED, Change, Changes
from spin.reporting.tables import MARK, csv_records, score_columns
from spin.reporting.tables import column_header as header_of


def _cell(change: Change | None, key: str) -> str:
    if change is None or change.low is None:
        return "-"
    mark = MARK if change.excludes_zero else ""
    n = decimals(key)
    return f"{change.change:+.{n}f} [{change.low:+.{n}f}, {change.high:+.{n}f}]{mark}"


def _with_changes(rows: Sequence[Row], changes: Changes) -> list[Row]:
    return [row for row in rows if row.model_key in changes]


def changes_markdown(rows: Sequence[Row], changes: Changes) -> str:
    """The changes as Markdown, with a line on how they were computed and notes on the
    cells without an interval."""
    title = "# Changes against SFT, in points, with paired 95% intervals\n\n"
    shown = _with_changes(rows, changes)
    if not shown:
        return title + (
            "No intervals: no model and its SFT row both have per-document scores (reports "
            "written before these were recorded have none).\n"
        )
    keys = score_columns(rows)
    lines = [
        f"Paired bootstrap: {RESAMPLES:,} draws of the same documents for both models (seed "
        f"{SEED}), {100 * LEVEL:g}% percentile interval; {MARK}: the interval excludes 0.",
        "",
        "| " + " | ".join(["Model", *(header_of(k, keys) for k in keys)]) + " |",
        "| " + " | ".join([":---", *("---:" for _ in keys)]) + " |",
    ]
    notes = []
    for row in shown:
        found = changes[row.model_key]
        cells = [_cell(found.get(k), k) for k in keys]
        lines.append("| " + " | ".join([row.name, *cells]) + " |")
        notes += [
            f"- {row.name}, {header_of(k, keys)}: {found[k].reason}"
            for k in keys
            if k in found and found[k].reason
        ]
    if notes:
        lines += ["", "No interval:", "", *notes]
    return title + "\n".join(lines) + "\n"


def changes_csv(rows: Sequence[Row], changes: Changes) -> str:
    """The changes as CSV at full precision: per score key its change, low and high (blank
    without an interval), then the reasons for the blanks."""
    keys = score_columns(rows)
    header = ["model", "kind", "iteration", "settings"]
    header += [f"{k} {part}" for k in keys for part in ("change", "low", "high")]
    records: list[list[Any]] = []
    for row in _with_changes(rows, changes):
        found = changes[row.model_key]
        cells: list[Any] = []
        for key in keys:
            change = found.get(key, Change())
            cells += [_rounded(change.change), _rounded(change.low), _rounded(change.high)]
        notes = "; ".join(f"{k}: {found[k].reason}" for k in keys if k in found and found[k].reason)
        records.append([row.name, row.kind, row.iteration, row.suffix, *cells, notes])
    return csv_records([*header, "notes"], records)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6) + 0.0
