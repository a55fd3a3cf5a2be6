"""The table a job (or a standalone scoring) prints at the end: one column per model, one row
per task metric, and the average over tasks last.

The comparison reports over many jobs are the rest of this package; this is the one a
single job shows on the console (spin/console.py decides what else reaches the console)."""

from __future__ import annotations

from typing import Any


def format_table(columns: list[tuple[str, dict[str, float]]]) -> str:
    """Scores side by side; ``columns`` pairs a model label with its ``<task>/<metric>`` scores.

    Scores are fractions and shown as percentages; a model without a score shows ``-``.
    """
    names = [n for n in dict.fromkeys(n for _, scores in columns for n in scores) if n != "average"]
    if not names:
        return "(evaluation disabled: eval=none)"
    names.append("average")
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
            row.append(f"{100 * scores[name]:>{w - 1}.1f}%" if name in scores else f"{'-':>{w}}")
        lines.append("  ".join(row))
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """Every model a job scored (the start model, each iteration, a baseline), per task and
    averaged."""
    return format_table([(row["label"], row["scores"]) for row in report["rows"]])
