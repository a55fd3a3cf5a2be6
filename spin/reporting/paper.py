"""The SPIN paper's own leaderboard numbers, shown beside a reproduction for comparison.

The numbers (zephyr-7b-sft-full and its SPIN/DPO successors, in percent) ship with the package
in ``paper_table.csv`` so a report can be read against them without a network. Models scored
here against those rows (the authors' released checkpoints, ``released.py``) are tabulated
beside them with the differences by :func:`comparison_markdown` and :func:`comparison_csv`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from statistics import fmean
from typing import Any

from spin.reporting.collect import KINDS, Row
from spin.reporting.tables import TASK_NAMES, csv_records

PAPER_MODEL = "zephyr-7b-sft-full"
# The metric the paper reports for each task: a reproduction scored with another metric of the
# same task is compared under its own key.
PAPER_METRICS = {
    "arc_challenge": "acc_norm",
    "truthfulqa_mc2": "mc2",
    "winogrande": "acc",
    "gsm8k": "exact_match",
    "hellaswag": "acc_norm",
    "mmlu": "acc",
}
_PAPER_MODELS = {
    "sft": ("SFT", "sft", None),
    "spin_iter0": ("SPIN iteration 0", "spin", 0),
    "spin_iter1": ("SPIN iteration 1", "spin", 1),
    "spin_iter2": ("SPIN iteration 2", "spin", 2),
    "spin_iter3": ("SPIN iteration 3", "spin", 3),
    "dpo": ("DPO", "dpo", None),
}


def load_paper() -> dict[str, dict[str, float]]:
    """The paper's table: model id (``sft``, ``spin_iter0``, ...) -> task -> percent."""
    text = resources.files("spin.reporting").joinpath("paper_table.csv").read_text()
    table = {}
    for record in csv.DictReader(text.splitlines()):
        model = record.pop("model")
        table[model] = {task: float(value) for task, value in record.items()}
    return table


def _score_key(task: str, keys: Sequence[str]) -> str:
    """The reproduction's key for ``task`` when it has one, so both share a column."""
    if task == "average":
        return "average"
    return next((k for k in keys if k.split("/")[0] == task), f"{task}/{PAPER_METRICS[task]}")


def paper_rows(score_keys: Sequence[str] = ()) -> list[Row]:
    """The paper's models as table rows, their deltas taken against the paper's SFT row.

    ``score_keys`` are the reproduction's score keys, so a paper number lands in the column
    of the same task.
    """
    rows = []
    for model, scores in load_paper().items():
        label, kind, iteration = _PAPER_MODELS[model]
        rows.append(
            Row(
                label=f"paper: {label}",
                kind=kind,
                iteration=iteration,
                model_key=f"paper:{model}",
                scores={_score_key(t, score_keys): v / 100 for t, v in scores.items()},
                reference=None if model == "sft" else "paper:sft",
                source="paper",
            )
        )
    return sorted(rows, key=lambda r: (KINDS.index(r.kind), r.iteration or 0))


def reproduces_paper(rows: Sequence[Row]) -> bool:
    """Whether ``rows`` come from the paper's start model scored on the paper's tasks."""
    tasks = {key.split("/")[0] for row in rows for key in row.scores}
    return (
        bool(rows)
        and all(row.settings.get("model") == PAPER_MODEL for row in rows)
        and set(PAPER_METRICS) <= tasks
    )


def with_paper(rows: Sequence[Row], paper: bool | None = None) -> list[Row]:
    """``rows`` followed by the paper's rows when asked (``paper=True``) or, with
    ``paper=None``, when the rows reproduce the paper's setting."""
    rows = [row for row in rows if row.source != "paper"]
    if paper is None:
        paper = reproduces_paper(rows)
    if not paper:
        return rows
    keys = list(dict.fromkeys(k for row in rows for k in row.scores))
    return rows + paper_rows(keys)


# ------------------------------------------------------------ measured against the paper
AVERAGE = "average"
AVERAGE_NOTE = (
    "Average: the mean over the paper's tasks the model was scored on; on the paper's line, "
    "the paper's own average unless only some of its tasks were scored, then the mean of its "
    "numbers for those."
)


def paper_label(model: str) -> str:
    """The name of a row of the paper's table (``spin_iter0`` -> ``SPIN iteration 0``)."""
    return _PAPER_MODELS[model][0]


@dataclass(frozen=True)
class Measured:
    """A model scored here, to be read against one row of the paper's table."""

    row: str  # the paper's row: sft, spin_iter0 .. spin_iter3, dpo
    model: str  # what was scored: path or hub id, and revision
    scores: dict[str, float]  # ``<task>/<metric>`` -> fraction, as a scoring gives them


def compared_tasks(measured: Sequence[Measured]) -> list[str]:
    """Columns: the paper's tasks in its order, then other tasks scored here; the average."""
    scored = {key.split("/")[0] for m in measured for key in m.scores if key != AVERAGE}
    return [*PAPER_METRICS, *sorted(scored - set(PAPER_METRICS)), AVERAGE]


def _rounded(value: float | None) -> float | None:
    """Full precision, less the float noise of a percent (six decimals, as tables.py)."""
    return None if value is None else round(value, 6) + 0.0


def _task_percent(scores: dict[str, float], task: str) -> float | None:
    value = next((v for k, v in scores.items() if k.split("/")[0] == task), None)
    return None if value is None else 100 * value


def comparison_records(measured: Sequence[Measured]) -> list[dict[str, Any]]:
    """Per model and column, the score measured here, the paper's and their difference, in
    percent at full precision; None where either side has no number."""
    paper = load_paper()
    tasks = compared_tasks(measured)
    records = []
    for m in measured:
        ours = {t: _task_percent(m.scores, t) for t in tasks if t != AVERAGE}
        theirs = {t: paper[m.row].get(t) for t in ours}
        shared = [t for t in PAPER_METRICS if ours[t] is not None]
        ours[AVERAGE] = fmean(ours[t] for t in shared) if shared else None
        some = 0 < len(shared) < len(PAPER_METRICS)
        theirs[AVERAGE] = fmean(theirs[t] for t in shared) if some else paper[m.row][AVERAGE]
        for task in tasks:
            mine, reported = ours.get(task), theirs.get(task)
            both = mine is not None and reported is not None
            records.append(
                {
                    "row": m.row,
                    "label": paper_label(m.row),
                    "model": m.model,
                    "task": task,
                    "measured": _rounded(mine),
                    "paper": reported,
                    "difference": _rounded(mine - reported) if both else None,
                }
            )
    return records


def comparison_csv(measured: Sequence[Measured]) -> str:
    """The comparison as CSV, one line per model and task; blank where a number is missing."""
    records = comparison_records(measured)
    header = ["row", "label", "model", "task", "measured", "paper", "difference"]
    return csv_records(header, [[r[h] for h in header] for r in records])


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _shown_difference(record: dict[str, Any]) -> str:
    """The difference of the two numbers as shown, so a reader checking it gets the same."""
    if record["difference"] is None:
        return "-"
    return f"{round(round(record['measured'], 2) - round(record['paper'], 2), 2) + 0.0:+.2f}"


def _line(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def comparison_markdown(measured: Sequence[Measured], notes: Sequence[str] = ()) -> str:
    """The comparison as Markdown: per model a line measured here, the paper's line and their
    difference (of the numbers as shown, so a reader can check it); under it the average's
    note and ``notes``."""
    tasks = compared_tasks(measured)
    names = ["Average" if t == AVERAGE else TASK_NAMES.get(t, t) for t in tasks]
    lines = [_line("Model", "", *names), _line(":---", ":---", *("---:" for _ in tasks))]
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for record in comparison_records(measured):
        by_model.setdefault(record["row"], {})[record["task"]] = record
    for m in measured:
        cells = [by_model[m.row][t] for t in tasks]
        lines += [
            _line(
                f"{paper_label(m.row)}: {m.model}",
                "measured",
                *(_cell(c["measured"]) for c in cells),
            ),
            _line("", "paper", *(_cell(c["paper"]) for c in cells)),
            _line("", "difference", *map(_shown_difference, cells)),
        ]
    return "\n".join([*lines, "", AVERAGE_NOTE, *(f"\n{note}" for note in notes)]) + "\n"
