"""The comparison table in the paper's layout (models down, tasks across) and the cost table.

Scores are shown in percent with two decimals; a delta is the change against the SFT row the
model started from. In Markdown and LaTeX the delta is the difference of the two numbers as
shown, so a reader checking the arithmetic gets the same result; the CSV keeps full precision.
Given the paired intervals of the changes (spin/reporting/significance.py), a delta whose
interval excludes 0 is marked ``*`` (and ``yes`` in the CSV's ``significant`` columns).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from spin.reporting.collect import COST_FIELDS, Row
from spin.reporting.job_table import decimals, ordered, scale
from spin.reporting.significance import Changes

# Column names for the tasks the project evaluates on, in the order the paper lists them.
TASK_NAMES = {
    "arc_challenge": "ARC",
    "truthfulqa_mc2": "TruthfulQA",
    "winogrande": "Winogrande",
    "gsm8k": "GSM8k",
    "hellaswag": "HellaSwag",
    "mmlu": "MMLU",
    "arith_gsm": "Arith GSM",
    "arith_mc2": "Arith MC2",
}
AVERAGE = "average"
MARK = "*"
MARK_NOTE = "the change's paired 95% bootstrap interval excludes 0 (changes.md)"
COST_HEADERS = {
    "generation_s": "Generation (s)",
    "reference_s": "Reference (s)",
    "train_s": "Train (s)",
    "eval_s": "Eval (s)",
    "tokens_generated": "Tokens generated",
    "tokens_trained": "Tokens trained",
    "generation_peak_gb": "Generation peak (GB)",
    "reference_peak_gb": "Reference peak (GB)",
    "train_peak_gb": "Train peak (GB)",
    "eval_peak_gb": "Eval peak (GB)",
}


def score_columns(rows: Sequence[Row]) -> list[str]:
    """Score keys shown as columns: known tasks in the paper's order, others as they come,
    then the average; empty when no row was scored."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row.scores) if k != AVERAGE]
    if not keys and not any(AVERAGE in row.scores for row in rows):
        return []
    order = list(TASK_NAMES)

    def rank(key: str) -> int:
        task = key.split("/")[0]
        return order.index(task) if task in order else len(order)

    return ordered(sorted(keys, key=rank))


def column_header(key: str, keys: Sequence[str]) -> str:
    """A short column name: the task's name, with the metric only where a task has several."""
    if key == AVERAGE:
        return "Average"
    task, _, metric = key.partition("/")
    name = TASK_NAMES.get(task, task)
    same_task = [k for k in keys if k.split("/")[0] == task]
    return f"{name} {metric}" if len(same_task) > 1 and metric else name


def _percent(row: Row, key: str) -> float | None:
    value = row.scores.get(key)
    return None if value is None else scale(key) * value


def _reference(row: Row, rows: Sequence[Row]) -> Row | None:
    if row.reference is None:
        return None
    return next((r for r in rows if r.model_key == row.reference), None)


def _marked(row: Row, key: str, changes: Changes | None) -> bool:
    change = (changes or {}).get(row.model_key, {}).get(key)
    return change is not None and change.excludes_zero


def _shown_cells(
    row: Row, keys: Sequence[str], rows: Sequence[Row], changes: Changes | None
) -> list[str]:
    """``35.10 (+8.34)`` per column, ``35.10 (+8.34)*`` where the change's interval excludes
    0; ``-`` where the model was not scored on the task."""
    reference = _reference(row, rows)
    cells = []
    for key in keys:
        value = _percent(row, key)
        if value is None:
            cells.append("-")
            continue
        base = None if reference is None else _percent(reference, key)
        n = decimals(key)
        if base is None:
            cells.append(f"{value:.{n}f}")
        else:
            delta = round(round(value, n) - round(base, n), n) + 0.0
            mark = MARK if _marked(row, key, changes) else ""
            cells.append(f"{value:.{n}f} ({delta:+.{n}f}){mark}")
    return cells


def markdown_table(rows: Sequence[Row], changes: Changes | None = None) -> str:
    """The table as Markdown: one row per model, one column per task, then the average; a
    line under it explains the marks, if any."""
    keys = score_columns(rows)
    header = ["Model", *(column_header(k, keys) for k in keys)]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join([":---", *("---:" for _ in keys)]) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join([row.name, *_shown_cells(row, keys, rows, changes)]) + " |")
    if any(_marked(row, key, changes) for row in rows for key in keys):
        lines += ["", f"`{MARK}`: {MARK_NOTE}."]
    return "\n".join(lines) + "\n"


def _significant(row: Row, key: str, changes: Changes | None) -> str | None:
    """``yes``/``no``: whether the change's interval excludes 0; None without an interval."""
    change = (changes or {}).get(row.model_key, {}).get(key)
    if change is None or change.low is None:
        return None
    return "yes" if change.excludes_zero else "no"


def table_records(
    rows: Sequence[Row], changes: Changes | None = None
) -> tuple[list[str], list[list[Any]]]:
    """The table as header and records, in percent at full precision: the CSV file and the
    W&B table hold the same."""
    keys = score_columns(rows)
    header = ["model", "kind", "iteration", "settings", *keys, *(f"{k} delta" for k in keys)]
    header += [f"{k} significant" for k in keys]
    records = []
    for row in rows:
        reference = _reference(row, rows)
        significant = [_significant(row, key, changes) for key in keys]
        scores, deltas = [], []
        for key in keys:
            value = _percent(row, key)
            base = None if reference is None else _percent(reference, key)
            scores.append(None if value is None else round(value, 6))
            missing = value is None or base is None
            deltas.append(None if missing else round(value - base, 6) + 0.0)
        records.append(
            [row.name, row.kind, row.iteration, row.suffix, *scores, *deltas, *significant]
        )
    return header, records


def csv_records(header: Sequence[str], records: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in record] for record in records])
    return out.getvalue()


def csv_table(rows: Sequence[Row], changes: Changes | None = None) -> str:
    """The table as CSV: blank cells where a score, delta or interval does not exist."""
    return csv_records(*table_records(rows, changes))


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, so setting names like
    ``opponent=sft_model`` compile."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _latex_cell(cell: str) -> str:
    """A cell escaped for LaTeX, its mark as a superscript star."""
    if cell.endswith(MARK):
        return latex_escape(cell[: -len(MARK)]) + "$^{*}$"
    return latex_escape(cell)


def latex_table(rows: Sequence[Row], changes: Changes | None = None) -> str:
    """The table as a booktabs ``tabular``, one line per model; the paper's rows, if any,
    are set apart by a rule. Marked deltas get a superscript star, explained under it."""
    keys = score_columns(rows)
    header = ["Model", *(column_header(k, keys) for k in keys)]
    lines = [
        r"\begin{tabular}{l" + "r" * len(keys) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    previous = None
    for row in rows:
        if previous is not None and row.source != previous:
            lines.append(r"\midrule")
        previous = row.source
        cells = [latex_escape(row.name), *map(_latex_cell, _shown_cells(row, keys, rows, changes))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if any(_marked(row, key, changes) for row in rows for key in keys):
        lines.append(r"\par{\footnotesize $^{*}$ " + latex_escape(MARK_NOTE) + ".}")
    return "\n".join(lines) + "\n"


def _cost_records(rows: Sequence[Row]) -> list[list[Any]]:
    """Per reproduced model its costs, then the total of what is known per column (for a
    peak memory column, the largest: peaks do not add up).

    Rows are one per model, so a stage shared by several jobs is counted once.
    """
    measured = [row for row in rows if row.source == "reproduction"]
    records = [[row.name, *(row.costs.get(f) for f in COST_FIELDS)] for row in measured]
    totals = []
    for i, name in enumerate(COST_FIELDS, start=1):
        known = [r[i] for r in records if r[i] is not None]
        total = max if _is_peak(name) else sum
        totals.append(total(known) if known else None)
    return [*records, ["Total", *totals]]


def _is_peak(name: str) -> bool:
    return name.endswith("_peak_gb")


def _cost_cell(name: str, value: float | None) -> str:
    if value is None:
        return ""
    if name.startswith("tokens_"):
        return f"{int(value)}"
    return f"{value:.2f}" if _is_peak(name) else f"{value:.1f}"


def cost_table(rows: Sequence[Row]) -> str:
    """What each model cost, as Markdown: seconds, tokens and peak resident memory per stage;
    blank where unknown."""
    header = ["Model", *COST_HEADERS.values()]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join([":---", *("---:" for _ in COST_FIELDS)]) + " |",
    ]
    for name, *values in _cost_records(rows):
        cells = [_cost_cell(f, v) for f, v in zip(COST_FIELDS, values, strict=True)]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def cost_csv(rows: Sequence[Row]) -> str:
    """What each model cost, as CSV with the contract's field names; blank where unknown."""
    return csv_records(["model", *COST_FIELDS], _cost_records(rows))
