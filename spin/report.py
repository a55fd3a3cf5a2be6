"""The short table a job prints at the end."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any]) -> str:
    """Held-out scores of the start model and of every iteration's output, as text."""
    rows = [("start model", report["start"])]
    rows += [(f"SPIN iteration {it['iteration']}", it["eval"]) for it in report["iterations"]]
    metrics = sorted({name for _, values in rows for name in values})
    if not metrics:
        return "(evaluation disabled: eval=none)"
    width = max(len(label) for label, _ in rows)
    lines = [f"{'model':<{width}}  " + "  ".join(f"{m:>12}" for m in metrics)]
    for label, values in rows:
        cells = (f"{100 * values[m]:>11.1f}%" if m in values else f"{'-':>12}" for m in metrics)
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
