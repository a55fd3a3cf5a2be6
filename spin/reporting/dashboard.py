"""A sweep's W&B dashboard in code: a saved workspace view (and a report) built with
``wandb-workspaces`` from the panels of :mod:`spin.reporting.panels`, with the runs of one
W&B group grouped by exactly the keys its sweep varied (the ``swept`` list every job records
in its W&B config).

What a dashboard needs to know about a sweep (the keys its jobs logged, the keys it swept)
is read from the jobs' metrics.jsonl under the outputs folder, or, when none are there, from
the W&B runs of the group.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from spin.errors import ReportError
from spin.reporting.panels import TABLES, JobLog, Panel, read_jobs, sections, swept_keys

TITLE = "SPIN: {group}"
# Where jobs keep their offline W&B runs (the job folder is the run's dir), for `wandb sync`.
OFFLINE_RUNS = (
    "{root}/sweeps/{name}/*/*/wandb/offline-run-*",
    "{root}/runs/{name}/*/wandb/offline-run-*",
)
VIEWS = """
query Views($entity: String, $project: String) {
  project(name: $project, entityName: $entity) {
    allViews(viewType: "project-view") { edges { node { id name displayName } } }
  }
}
"""


@dataclass(frozen=True)
class Sweep:
    """One W&B group of runs and what its dashboard shows."""

    entity: str
    project: str
    group: str
    keys: frozenset[str]  # the metric keys its jobs logged
    swept: tuple[str, ...]  # the config keys its sweep varied

    @property
    def title(self) -> str:
        return TITLE.format(group=self.group)


def job_group(job: JobLog) -> str:
    """The W&B group a job logged into: ``logger.group``, else the experiment's ``name``."""
    cfg = yaml.safe_load((job.job_dir / "config.yaml").read_text())
    return (cfg.get("logger") or {}).get("group") or cfg["name"]


def local_jobs(root: Path) -> dict[str, list[JobLog]]:
    """The jobs under an outputs folder by W&B group, the most recently finished group first."""
    jobs = read_jobs([root]) if root.is_dir() else []
    jobs.sort(key=lambda job: (job.job_dir / "report.json").stat().st_mtime, reverse=True)
    groups: dict[str, list[JobLog]] = {}
    for job in jobs:
        groups.setdefault(job_group(job), []).append(job)
    return groups


def local_sweep(entity: str, project: str, group: str, jobs: Iterable[JobLog]) -> Sweep:
    jobs = list(jobs)
    keys = frozenset(key for job in jobs for key in job.keys)
    return Sweep(entity, project, group, keys, tuple(swept_keys(jobs)))


def wandb_sweep(api: Any, entity: str, project: str, group: str) -> Sweep:
    """The sweep as its W&B runs record it: the keys in their summaries, ``swept`` in their
    configs."""
    runs = list(api.runs(f"{entity}/{project}", filters={"group": group}))
    if not runs:
        raise ReportError(f"no runs of group '{group}' in {entity}/{project}")
    keys = frozenset().union(*(run.summary.keys() for run in runs))
    swept = dict.fromkeys(key for run in runs for key in run.config.get("swept", []))
    return Sweep(entity, project, group, keys, tuple(swept))


def definitions(sweep: Sweep) -> dict[str, Any]:
    """The dashboard in plain terms: which runs, grouped by what, which panels and tables."""
    return {
        "entity": sweep.entity,
        "project": sweep.project,
        "group": sweep.group,
        "title": sweep.title,
        "group_by": list(sweep.swept),
        "sections": {
            name: [asdict(p) for p in panels] for name, panels in sections(sweep.keys).items()
        },
        "tables": list(TABLES),
    }


def _line_plot(panel: Panel) -> Any:
    import wandb_workspaces.reports.v2 as wr

    return wr.LinePlot(title=panel.title, x=panel.x, y=[*panel.ys, *panel.reference])


def _tables() -> list[Any]:
    import wandb_workspaces.reports.v2 as wr

    return [wr.WeavePanelSummaryTable(table_name=name) for name in TABLES]


def workspace(sweep: Sweep) -> Any:
    """The saved view: one open section per panel group, the group's runs only, grouped by
    the swept keys."""
    import wandb_workspaces.workspaces as ws

    panels = {name: [_line_plot(p) for p in ps] for name, ps in sections(sweep.keys).items()}
    return ws.Workspace(
        entity=sweep.entity,
        project=sweep.project,
        name=sweep.title,
        sections=[
            ws.Section(name=name, panels=items, is_open=True)
            for name, items in {**panels, "Tables": _tables()}.items()
        ],
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == sweep.group],
            groupby=[ws.Config(key) for key in sweep.swept],
        ),
        settings=ws.WorkspaceSettings(max_runs=100),
        auto_generate_panels=False,
    )


def report(sweep: Sweep) -> Any:
    """The report: a heading and a panel grid per section, over the same runs and grouping."""
    import wandb_workspaces.reports.v2 as wr

    # No entity or project: the report's own (and no project lookup to build the spec).
    runset = wr.Runset(
        name=sweep.group,
        filters=f"Group = '{sweep.group}'",
        groupby=[f"config.{key}" for key in sweep.swept],
    )
    blocks: list[Any] = []
    grids = {name: [_line_plot(p) for p in ps] for name, ps in sections(sweep.keys).items()}
    for name, panels in {**grids, "Tables": _tables()}.items():
        blocks += [wr.H2(name), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(
        entity=sweep.entity,
        project=sweep.project,
        title=sweep.title,
        description=f"SPIN iterations of group {sweep.group}, by {', '.join(sweep.swept)}",
        blocks=blocks,
    )


def specs(sweep: Sweep, with_report: bool) -> dict[str, Any]:
    """The definitions plus the W&B view and report specs they save as (what --print shows)."""
    out = definitions(sweep)
    out["workspace"] = _dump(workspace(sweep))
    if with_report:
        out["report"] = _dump(report(sweep))
    return out


def _dump(item: Any) -> Any:
    return json.loads(item._to_model().model_dump_json(by_alias=True, exclude_none=True))


def save(api: Any, sweep: Sweep, with_report: bool) -> list[str]:
    """Create or update (by title) the view, and the report if asked; their URLs."""
    from wandb_workspaces._graphql import execute_graphql

    view = workspace(sweep)
    found = execute_graphql(api, VIEWS, {"entity": sweep.entity, "project": sweep.project})
    edges = ((found.get("project") or {}).get("allViews") or {}).get("edges", [])
    same = next((e["node"] for e in edges if e["node"]["displayName"] == sweep.title), None)
    if same is not None:
        object.__setattr__(view, "_internal_name", same["name"])
        object.__setattr__(view, "_internal_id", same["id"])
    urls = [view.save().url]
    if with_report:
        urls.append(_save_report(api, sweep))
    return urls


def _save_report(api: Any, sweep: Sweep) -> str:
    import wandb_workspaces.reports.v2 as wr

    new = report(sweep)
    path = f"{sweep.entity}/{sweep.project}"
    same = next((r for r in api.reports(path) if r.display_name == sweep.title), None)
    if same is not None:
        old = wr.Report.from_url(same.url)
        old.blocks, old.description = new.blocks, new.description
        new = old
    return new.save().url


def offline_help(root: Path, group: str) -> str:
    """How to get from offline runs to a dashboard."""
    patterns = "\n".join(f"  wandb sync {p.format(root=root, name=group)}" for p in OFFLINE_RUNS)
    return (
        "Log in once with `wandb login` (or set WANDB_API_KEY), then upload the offline runs "
        f"the jobs wrote:\n{patterns}\n"
        "and run this command again. --print writes the definitions without W&B."
    )
