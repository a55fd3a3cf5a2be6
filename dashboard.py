"""Build a sweep's W&B dashboard: a saved workspace view comparing its iterations, and a report.

    python dashboard.py ENTITY/PROJECT --group tiny           # create or update the view
    python dashboard.py ENTITY/PROJECT --group tiny --report  # and a report with the same panels
    python dashboard.py ENTITY/PROJECT --group tiny --print   # the definitions as JSON, offline

Panels: scores by iteration (the start model's as reference lines), training, self-play,
cost and tables; runs grouped by the keys the sweep varied. The group's jobs are read from
``--outputs`` (their metrics.jsonl), or from W&B when none are there. Exits 2 when W&B cannot be
reached, saying how to log in and upload the offline runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spin.entry import script
from spin.errors import ReportError, TrackingError
from spin.reporting.dashboard import (
    Sweep,
    connect,
    local_jobs,
    local_sweep,
    offline_help,
    save,
    specs,
    wandb_sweep,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="ENTITY/PROJECT of the W&B runs (logger.entity/project)")
    parser.add_argument(
        "--group", help="W&B group (logger.group, else the experiment's name; default: latest)"
    )
    parser.add_argument("--report", action="store_true", help="also create or update a report")
    parser.add_argument(
        "--print", action="store_true", help="write the definitions as JSON; no W&B needed"
    )
    parser.add_argument(
        "--outputs", type=Path, default=Path("outputs"), help="paths.root the jobs wrote to"
    )
    args = parser.parse_args(argv)
    if args.path.count("/") != 1 or not all(args.path.split("/")):
        parser.error(f"PATH: expected ENTITY/PROJECT, got {args.path!r}")
    return args


def find_sweep(args: argparse.Namespace, api: object | None) -> Sweep:
    """The group's sweep from local jobs, else (given an API) from its W&B runs."""
    entity, project = args.path.split("/")
    groups = local_jobs(args.outputs)
    group = args.group or next(iter(groups), None)
    if group in groups:
        return local_sweep(entity, project, group, groups[group])
    if api is not None and group is not None:
        return wandb_sweep(api, entity, project, group)
    known = ", ".join(groups) or "none"
    raise ReportError(f"no jobs of group {group!r} under {args.outputs} (groups there: {known})")


@script("saving the dashboard", "Run the same command again: the view is saved anew")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print:
        print(json.dumps(specs(find_sweep(args, None), args.report), indent=2))
        return 0
    try:
        api = connect()
        urls = save(api, find_sweep(args, api), args.report)
    except TrackingError:
        # The way on is a list of commands, said before the one line naming the fault.
        print(offline_help(args.outputs, args.group), file=sys.stderr)
        raise
    print("\n".join(urls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
