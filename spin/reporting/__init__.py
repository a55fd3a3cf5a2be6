"""Comparison reports over many jobs: tables (Markdown, CSV, LaTeX), costs and plots.

``collect_rows`` reads the jobs' report.json files into one row per model; ``write_report``
writes every table and figure for those rows into a folder (and, if asked, into W&B), with
the paired bootstrap intervals of each model's changes against SFT where the rows hold
per-document scores (changes.md, changes.csv, and marks in the tables). The
``report.py`` command and the sweep runner both go through these two functions; the table a
single job prints when it ends is :mod:`spin.reporting.job_table`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from spin.reporting.changes import changes_csv, changes_markdown
from spin.reporting.collect import Row, collect_rows
from spin.reporting.dynamics import dynamics_markdown
from spin.reporting.panels import read_jobs
from spin.reporting.paper import with_paper
from spin.reporting.plots import plot_curves, plot_panels, plot_scores
from spin.reporting.seeds import pool_seeds, seeds_markdown
from spin.reporting.significance import Changes, all_changes
from spin.reporting.tables import (
    cost_csv,
    cost_table,
    csv_table,
    latex_table,
    markdown_table,
    table_records,
)

__all__ = ["Row", "collect_rows", "log_wandb", "write_job_panels", "write_report"]

PLOTS = {"scores_vs_iteration.png": plot_scores, "training_curves.png": plot_curves}


def log_wandb(
    rows: Sequence[Row], out: Path, images: Sequence[Path], changes: Changes | None = None
) -> Path:
    """Log the table and figures into a new W&B run (project ``spin``, job type ``report``)
    kept under ``out``; offline unless WANDB_MODE says otherwise. Returns the run's folder."""
    import wandb

    header, records = table_records(rows, changes)
    run = wandb.init(
        project="spin",
        job_type="report",
        dir=str(out),
        mode=os.environ.get("WANDB_MODE", "offline"),
        reinit="create_new",
    )
    try:
        run.log(
            {
                "report/table": wandb.Table(columns=header, data=records),
                **{f"report/{p.stem}": wandb.Image(str(p)) for p in images},
            }
        )
    finally:
        run.finish()
    return Path(run.dir).parent


def write_job_panels(paths: Sequence[Path], out: Path) -> list[Path]:
    """What the jobs' metrics.jsonl alone give (no report.json needed): the dashboard's
    training, self-play and cost sections as PNG files, and the self-play dynamics table
    (dynamics.md), written into ``out``; returns what was written."""
    jobs = read_jobs(paths)
    written = plot_panels(jobs, out)
    table = dynamics_markdown(jobs)
    (out / "dynamics.md").unlink(missing_ok=True)
    if table is not None:
        (out / "dynamics.md").write_text(table)
        written.append(out / "dynamics.md")
    return written


def write_report(
    rows: Sequence[Row], out: Path, *, wandb: bool = False, paper: bool | None = None
) -> list[Path]:
    """Write the tables and figures for ``rows`` into ``out`` and return what was written.

    ``paper`` adds the SPIN paper's rows: True always, None when the rows reproduce the
    paper's setting. A figure with nothing to draw is not written (and an older one removed),
    so the folder never shows a stale plot.
    """
    rows = pool_seeds(with_paper(rows, paper))
    changes = all_changes(rows)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "table.md": markdown_table(rows, changes),
        "table.csv": csv_table(rows, changes),
        "table.tex": latex_table(rows, changes),
        "changes.md": changes_markdown(rows, changes),
        "changes.csv": changes_csv(rows, changes),
        "costs.md": cost_table(rows),
        "costs.csv": cost_csv(rows),
    }
    per_seed = seeds_markdown(rows)
    (out / "seeds.md").unlink(missing_ok=True)
    if per_seed is not None:
        texts["seeds.md"] = per_seed
    written = []
    for name, text in texts.items():
        (out / name).write_text(text)
        written.append(out / name)
    images = []
    for name, plot in PLOTS.items():
        (out / name).unlink(missing_ok=True)
        image = plot(rows, out / name)
        if image is not None:
            images.append(image)
    written += images
    if wandb:
        written.append(log_wandb(rows, out, images, changes))
    return written
