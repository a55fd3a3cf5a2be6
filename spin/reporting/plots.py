"""Figures of a sweep: scores across SPIN iterations, and the training curves behind them.

Figures are drawn on a bare ``Figure`` (Agg canvas) rather than through pyplot, so making a
report never opens a window nor changes the backend of a caller's process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spin.reporting.collect import Row
from spin.reporting.tables import column_header, score_columns

CURVE_METRICS = ("rewards/margins", "rewards/accuracies")
SFT_X = -1
# Rows drawn as horizontal reference lines rather than along the iteration axis.
LEVEL_KINDS = ("sft", "sft_more", "dpo")


def _palette(labels: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per label, the same in every subplot."""
    cmap = matplotlib.colormaps["tab10"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(dict.fromkeys(labels))}


def _spin_lines(rows: Sequence[Row], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per setting group, the SPIN scores by iteration, starting at the SFT model they grew
    from (drawn at ``x = -1``)."""
    by_key = {row.model_key: row for row in rows}
    lines: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        if row.kind != "spin" or key not in row.scores:
            continue
        name = _series(row)
        xs, ys = lines.setdefault(name, ([], []))
        start = by_key.get(row.reference or "")
        if not xs and start is not None and key in start.scores:
            xs.append(SFT_X)
            ys.append(100 * start.scores[key])
        xs.append(row.iteration if row.iteration is not None else 0)
        ys.append(100 * row.scores[key])
    return lines


def _series(row: Row) -> str:
    """The legend entry of a SPIN or SPIN + DPO row: one per setting group."""
    base = "SPIN + DPO" if row.kind == "spin_dpo" else "SPIN"
    return base + (f" ({row.group})" if row.group else "")


def _draw_scores(ax: Axes, rows: Sequence[Row], key: str, colors: dict) -> None:
    for row in rows:
        if row.kind in LEVEL_KINDS and key in row.scores:
            ax.axhline(
                100 * row.scores[key], linestyle="--", color=colors[row.name], label=row.name
            )
    for name, (xs, ys) in _spin_lines(rows, key).items():
        ax.plot(xs, ys, marker="o", color=colors[name], label=name)
    for row in rows:
        if row.kind == "spin_dpo" and key in row.scores:
            x = row.iteration if row.iteration is not None else 0
            spin = _series(replace(row, kind="spin"))
            ax.scatter(
                [x],
                [100 * row.scores[key]],
                marker="*",
                s=90,
                color=colors[spin],
                label=_series(row),
            )


def plot_scores(rows: Sequence[Row], path: Path) -> Path | None:
    """One subplot per task and one for the average, score (%) against SPIN iteration.

    SPIN draws one line per setting group; SFT, SFT + 1 epoch and DPO are dashed levels.
    Returns None (and writes nothing) when no model was scored.
    """
    keys = score_columns(rows)
    if not keys:
        return None
    spin_names = [_series(replace(r, kind="spin")) for r in rows if r.kind.startswith("spin")]
    colors = _palette([r.name for r in rows if r.kind in LEVEL_KINDS] + spin_names)
    iterations = [r.iteration for r in rows if r.iteration is not None]
    ticks = list(range(SFT_X, max(iterations, default=0) + 1))
    ncols = min(3, len(keys))
    fig = Figure(figsize=(4.5 * ncols, 3.4 * math.ceil(len(keys) / ncols)), layout="constrained")
    axes = fig.subplots(math.ceil(len(keys) / ncols), ncols, squeeze=False).flatten()
    for ax, key in zip(axes, keys, strict=False):
        _draw_scores(ax, rows, key, colors)
        ax.set_title(column_header(key, keys))
        ax.set_xticks(ticks, ["SFT", *map(str, ticks[1:])])
        ax.set_xlabel("SPIN iteration")
        ax.set_ylabel("score (%)")
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    _legend(fig)
    fig.savefig(path, dpi=120)
    return path


def _legend(fig: Figure) -> None:
    """One legend for the whole figure: every subplot draws the same series."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3)


def plot_curves(rows: Sequence[Row], path: Path) -> Path | None:
    """Reward margins and accuracies against training step: one row of subplots per setting
    group, one line per trained model in it (each SPIN iteration, DPO, ...).

    Returns None (and writes nothing) when no model has training curves.
    """
    trained = [r for r in rows if any(m in p for p in r.curves for m in CURVE_METRICS)]
    if not trained:
        return None
    # Groups in the order of their SPIN lines, the order the table lists them in.
    groups = list(
        dict.fromkeys([r.group for r in trained if r.kind == "spin"] + [r.group for r in trained])
    )
    colors = _palette([r.label for r in trained])
    fig = Figure(figsize=(11, 3.4 * len(groups)), layout="constrained")
    grid = fig.subplots(len(groups), len(CURVE_METRICS), squeeze=False, sharex=True)
    for axes, group in zip(grid, groups, strict=True):
        for ax, metric in zip(axes, CURVE_METRICS, strict=True):
            for row in (r for r in trained if r.group == group):
                points = [p for p in row.curves if metric in p and "step" in p]
                steps = [p["step"] for p in points]
                values = [p[metric] for p in points]
                ax.plot(steps, values, color=colors[row.label], label=row.label)
            ax.set_title(f"{metric} ({group})" if group else metric)
    for ax in grid[-1]:
        ax.set_xlabel("step")
    _legend(fig)
    fig.savefig(path, dpi=120)
    return path
