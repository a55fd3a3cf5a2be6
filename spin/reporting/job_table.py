"""The table a job (or a standalone scoring) prints at the end: one column per model, one row
per task metric, the average over tasks, then the held-out NLL metrics (in no average).

The comparison reports over many jobs are the rest of this package; this is the one a
single job shows on the console (spin/console.py decides what else reaches the console)."""

from __future__ import annotations

from typing import Any

from evaluation.exact import NATS

AVERAGE = "average"
# A held-out metric's flat name has no "/" (evaluation/heldout.py); a "_nll" one is a loss in
# nats per token, and the exact world's divergences, entropies and log-probabilities are in
# nats too (evaluation/exact.py): shown as numbers, not percentages.
NAT_SUFFIXES = ("_nll", *(f"_{metric}" for metric in NATS))


def is_heldout(key: str) -> bool:
    """Whether a score key is a held-out metric (``<data>_nll``, ``<data>_greedy_match``)."""
    return "/" not in key and key != AVERAGE


def is_loss(key: str) -> bool:
    """Whether a score key is a quantity in nats (a loss, a divergence) rather than a
    fraction."""
    return is_heldout(key) and key.endswith(NAT_SUFFIXES)


def ordered(keys: list[str]) -> list[str]:
    """Task scores, the average, then the held-out metrics: the order every table shows."""
    tasks = [k for k in keys if "/" in k]
    return [*tasks, *([AVERAGE] if tasks else []), *(k for k in keys if is_heldout(k))]


def scale(key: str) -> float:
    """What a value is multiplied by to be shown: a loss stays in nats per token, a
    fraction becomes a percentage."""
    return 1.0 if is_loss(key) else 100.0


def decimals(key: str) -> int:
    """Decimals a report shows of a value in its unit: a held-out NLL changes in the third
    decimal of a nat, a percentage in the second."""
    return 3 if is_loss(key) else 2


def shown(key: str, value: float) -> str:
    """A loss as nats per token, anything else as a percentage."""
    return f"{value:.3f}" if is_loss(key) else f"{100 * value:.1f}%"


def format_table(columns: list[tuple[str, dict[str, float]]]) -> str:
    """Scores side by side; ``columns`` pairs a model label with its ``<task>/<metric>`` scores.

    Scores are fractions and shown as percentages, a held-out NLL in nats per token; a model
    without a score shows ``-``.
    """
    names = [n for n in dict.fromkeys(n for _, scores in columns for n in scores) if n != AVERAGE]
    if not names:
        return "(evaluation disabled: eval=none)"
    names = ordered(names)
    width = max(len(n) for n in names)
    cells = [max(len(label), 7) for label, _ in columns]
    lines = [
        "  ".join(
            [
                f"{'task/metric':<{width}}",
                *(f"{lb:>{w}}" for (lb, _), w in zip(columns, cells, strict=True)),
            ]
        )
    ]
    for name in names:
        row = [f"{name:<{width}}"]
        for (_, scores), w in zip(columns, cells, strict=True):
            row.append(f"{shown(name, scores[name]):>{w}}" if name in scores else f"{'-':>{w}}")
        lines.append("  ".join(row))
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """Every model a job scored (the start model, each iteration, a baseline), per task and
    averaged."""
    return format_table([(row["label"], row["scores"]) for row in report["rows"]])
