"""Compare the models of one or more sweeps in one table, with costs and plots.

``python report.py outputs/<name>/<date>`` reads every report.json below the given sweep
folders, job folders or report files, merges the models they share, and writes table.md,
table.csv, table.tex, costs.md, costs.csv, changes.md, changes.csv (paired bootstrap
intervals of the changes against SFT) and PNG plots into ``--out``: scores and training curves
from the reports, and the W&B dashboard's training, self-play and cost sections
(``dashboard.py``) and the self-play dynamics table (dynamics.md) from the jobs'
metrics.jsonl; for jobs on the exact world, exact_world.md and its plots
(:mod:`spin.reporting.exact_world`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spin.entry import script
from spin.reporting import collect_rows, write_job_panels, write_report
from spin.reporting.exact_world import write_exact_world


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "paths", nargs="+", type=Path, help="sweep folders, job folders or report.json files"
    )
    parser.add_argument(
        "--out", type=Path, help="where to write the report (default: <first PATH>/report)"
    )
    parser.add_argument("--wandb", action="store_true", help="also log the report to W&B")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="show the SPIN paper's numbers (automatic for zephyr-7b-sft-full on the leaderboard)",
    )
    return parser.parse_args(argv)


def default_out(path: Path) -> Path:
    """``report/`` beside the jobs: in the folder given, or the one holding the given file."""
    return (path.parent if path.is_file() else path) / "report"


@script("writing the report", "Run the same command again: the report is written anew")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = collect_rows(args.paths)
    out = args.out or default_out(args.paths[0])
    written = write_report(rows, out, wandb=args.wandb, paper=True if args.paper else None)
    written += write_job_panels(args.paths, out)
    written += write_exact_world(args.paths, out)
    print((out / "table.md").read_text())
    print("Written:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
