"""The SPIN paper's own leaderboard numbers, shown beside a reproduction for comparison.

The numbers (zephyr-7b-sft-full and its SPIN/DPO successors, in percent) ship with the package
in ``paper_table.csv`` so a report can be read against them without a network.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from importlib import resources

from spin.reporting.collect import KINDS, Row

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
