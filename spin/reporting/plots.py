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
from spin.reporting.job_table import is_loss, scale
from spin.reporting.panels import COST, GLOBAL_STEP, ITERATION, SELF_PLAY, TRAINING, JobLog, Panel
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
            ys.append(scale(key) * start.scores[key])
        xs.append(row.iteration if row.iteration is not None else 0)
        ys.append(scale(key) * row.scores[key])
    return lines


def _series(row: Row) -> str:
    """The legend entry of a SPIN or SPIN + DPO row: one per setting group."""
    base = "SPIN + DPO" if row.kind == "spin_dpo" else "SPIN"
    return base + (f" ({row.group})" if row.group else "")


def _draw_scores(ax: Axes, rows: Sequence[Row], key: str, colors: dict) -> None:
    for row in rows:
        if row.kind in LEVEL_KINDS and key in row.scores:
            ax.axhline(
                scale(key) * row.scores[key], linestyle="--", color=colors[row.name], label=row.name
            )
    for name, (xs, ys) in _spin_lines(rows, key).items():
        ax.plot(xs, ys, marker="o", color=colors[name], label=name)
    for row in rows:
        if row.kind == "spin_dpo" and key in row.scores:
            x = row.iteration if row.iteration is not None else 0
            spin = _series(replace(row, kind="spin"))
            ax.scatter(
                [x],
                [scale(key) * row.scores[key]],
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
        ax.set_ylabel("nats" if is_loss(key) else "score (%)")
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


# The dashboard's sections drawn from the jobs' metrics.jsonl: file name -> panels.
PANEL_FIGURES = {"training.png": TRAINING, "self_play.png": SELF_PLAY, "cost.png": COST}
LINE_STYLES = ("-", "--", ":", "-.")


def _points(jobs: Sequence[JobLog], panel: Panel) -> dict[tuple[str, str, int], dict]:
    """(y key, chain, iteration) -> {x: y}: jobs of one chain share their iterations, so each
    point is kept once whichever job logged it."""
    points: dict[tuple[str, str, int], dict] = {}
    for job in jobs:
        for row in job.rows:
            for y in panel.ys:
                if row.get(y) is not None and panel.x in row:
                    key = (y, job.chain, row.get(ITERATION, 0))
                    points.setdefault(key, {})[row[panel.x]] = row[y]
    return points


def _draw_panel(ax: Axes, jobs: Sequence[JobLog], panel: Panel) -> None:
    """Against the step axis one line per iteration, coloured by iteration; against iteration
    one line per key (coloured by key). Each chain (swept setting) has its own line style."""
    by_step = panel.x == GLOBAL_STEP
    lines: dict[str, dict] = {}
    styles: dict[str, tuple[str, str]] = {}  # line -> (what picks its colour, its chain)
    for (y, chain, t), points in sorted(_points(jobs, panel).items(), key=lambda i: i[0][2]):
        name = _name(panel, y, chain, t, by_step=by_step)
        lines.setdefault(name, {}).update(points)
        styles[name] = (f"iteration {t}" if by_step else y if len(panel.ys) > 1 else chain, chain)
    colors = _palette([colour for colour, _ in styles.values()])
    chains = list(dict.fromkeys(chain for _, chain in styles.values()))
    for name, points in lines.items():
        colour, chain = styles[name]
        xs = sorted(points)
        ax.plot(
            xs,
            [points[x] for x in xs],
            marker=None if by_step else "o",
            linestyle=LINE_STYLES[chains.index(chain) % len(LINE_STYLES)],
            color=colors[colour],
            label=name,
        )
    ax.set_title(panel.title)
    ax.set_xlabel(panel.x)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _name(panel: Panel, y: str, chain: str, iteration: int, *, by_step: bool) -> str:
    """A line's legend entry: its key when a panel has several, iteration, chain."""
    parts = [y] if len(panel.ys) > 1 else []
    parts += [f"iteration {iteration}"] if by_step else []
    name = ", ".join(parts) or panel.title
    return f"{name} ({chain})" if chain else name


def plot_panels(jobs: Sequence[JobLog], out: Path) -> list[Path]:
    """The dashboard's training, self-play and cost sections as PNG files in ``out``, from
    the jobs' metric records; a section with nothing logged is not written."""
    written = []
    for name, panels in PANEL_FIGURES.items():
        drawn = [p for p in panels if _points(jobs, p)]
        (out / name).unlink(missing_ok=True)
        if not drawn:
            continue
        ncols = min(3, len(drawn))
        nrows = math.ceil(len(drawn) / ncols)
        fig = Figure(figsize=(max(4.5 * ncols, 11), 3.4 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
        for ax, panel in zip(axes, drawn, strict=False):
            _draw_panel(ax, jobs, panel)
        for ax in axes[len(drawn) :]:
            ax.set_visible(False)
        _legend(fig)
        fig.savefig(out / name, dpi=120)
        written.append(out / name)
    return written
