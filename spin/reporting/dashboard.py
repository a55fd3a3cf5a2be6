"""A sweep's W&B dashboard in code: a saved workspace view (and a report) built with
``wandb-workspaces`` from the panels of :mod:`spin.reporting.panels`, with the runs of one
W&B group grouped by exactly the keys its sweep varied (the ``swept`` list every job records
in its W&B config).

What a dashboard needs to know about a sweep (the keys its jobs logged, the keys it swept)
is read from the jobs' metrics.jsonl under the outputs folder, or, when none are there, from
the W&B runs of the group.

Saving goes through one ``wandb.Api`` and ``wandb-workspaces``' GraphQL helper: the view and
the report are found among the viewer's own views of the project (every page), then created
or updated by id with the library's ``upsertView`` mutation, and their URLs are built on the
app URL as the API reports it, path included (``https://forge.coreweave.com/wandb/``). Every
failure of talking to W&B leaves this module as a :class:`~spin.errors.TrackingError` whose
one-line message says what failed and what to do.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from spin.errors import ReportError, TrackingError
from spin.reporting.panels import TABLES, JobLog, Panel, read_jobs, sections, swept_keys

TITLE = "SPIN: {group}"
# Where jobs keep their offline W&B runs, below their job folders, for `wandb sync`; when no
# job of the group is found locally, the experiment folders of train.py's defaults.
OFFLINE_RUN = "wandb/offline-run-*"
DEFAULT_JOB_FOLDERS = ("{root}/sweeps/{name}/*/*", "{root}/runs/{name}/*")
VIEW_TYPE = "project-view"  # a saved workspace view
REPORT_TYPE = "runs"  # a published report (drafts are "runs/draft")
PAGE = 50
# The viewer, and one page of the project's views of a type: the dashboard updates only a
# view or report the viewer made, never another user's of the same title.
VIEWS = """
query SpinDashboardViews(
  $entity: String!, $project: String!, $viewType: String!, $first: Int!, $cursor: String
) {
  viewer { username }
  project(name: $project, entityName: $entity) {
    allViews(viewType: $viewType, first: $first, after: $cursor) {
      edges { node { id name displayName user { username } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
# A name W&B does not require to be unique, but the app addresses views by: a new view is
# nw-<11 characters>-v (its URL query is nw=<11 characters>), a new report 12 characters.
NAME_ALPHABET = string.ascii_lowercase + string.digits


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

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}"


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


# --- talking to W&B ---------------------------------------------------------------------


def _failures() -> tuple[type[BaseException], ...]:
    """What W&B's client raises when a request fails: its own errors (CommError,
    AuthenticationError, UsageError), wandb-core's WandbApiFailedError (a GraphQL error such
    as a refused permission or an unknown field, a bad HTTP status, a timeout) and OSError
    (requests' errors, a refused connection)."""
    import wandb

    try:
        from wandb.sdk.lib.service.service_connection import WandbApiFailedError
    except ImportError:  # wandb before wandb-core's API transport: requests raises
        return (wandb.errors.Error, OSError)
    return (wandb.errors.Error, WandbApiFailedError, OSError)


def _reason(err: BaseException) -> str:
    """The error in one line of at most 200 characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:199] + "…"


@contextmanager
def _talking(what: str, remedy: str, missing: str | None = None) -> Iterator[None]:
    """Turn a failed request into a TrackingError: "cannot <what> (<why>): <remedy>".
    ``missing``, where given, is the message for the library's ValueError of a project that
    does not exist (or that the login cannot see)."""
    try:
        yield
    except (TrackingError, ReportError):
        raise
    except _failures() as err:
        raise TrackingError(f"cannot {what} ({_reason(err)}): {remedy}") from err
    except ValueError as err:
        if missing is None:
            raise
        raise TrackingError(f"{missing} ({_reason(err)})") from err


def _no_project(sweep_path: str) -> str:
    return (
        f"W&B has no project {sweep_path} that this login can see: check ENTITY/PROJECT "
        "(logger.entity/project) and the login, or upload the runs first"
    )


def connect(timeout: int = 30) -> Any:
    """A W&B API client, logged in (``wandb login`` or WANDB_API_KEY)."""
    import wandb

    remedy = "run `wandb login` (or set WANDB_API_KEY) where W&B is reachable, then run again"
    with _talking("log in to W&B", remedy):
        return wandb.Api(timeout=timeout)


def _query(api: Any, document: str, variables: dict[str, Any]) -> dict[str, Any]:
    from wandb_workspaces._graphql import execute_graphql

    return execute_graphql(api, document, variables)


def _field(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or a TrackingError naming what the answer lacked."""
    for key in path:
        if not isinstance(data, dict) or data.get(key) is None:
            raise TrackingError(
                f"W&B answered without {'.'.join(path)}: the server may be older or newer "
                "than wandb-workspaces expects; try --print and create the view by hand"
            )
        data = data[key]
    return data


def wandb_sweep(api: Any, entity: str, project: str, group: str) -> Sweep:
    """The sweep as its W&B runs record it: the keys in their summaries, ``swept`` in their
    configs."""
    path = f"{entity}/{project}"
    remedy = f"check the network and that this login may read {path}"
    with _talking(f"read the runs of {path}", remedy, missing=_no_project(path)):
        runs = list(api.runs(path, filters={"group": group}))
        keys = frozenset().union(*(run.summary.keys() for run in runs))
        swept = dict.fromkeys(key for run in runs for key in run.config.get("swept", []))
    if not runs:
        raise ReportError(f"no runs of group '{group}' in {path}")
    return Sweep(entity, project, group, keys, tuple(swept))


def own_view(api: Any, sweep: Sweep, view_type: str) -> dict[str, Any] | None:
    """The viewer's view of ``view_type`` titled as the sweep's dashboard, if any: every page
    of the project's views is read until one is found."""
    what = "report" if view_type == REPORT_TYPE else "view"
    remedy = f"check the network and that this login may read {sweep.path}"
    variables = {
        "entity": sweep.entity,
        "project": sweep.project,
        "viewType": view_type,
        "first": PAGE,
        "cursor": None,
    }
    seen: set[str | None] = set()
    while True:
        with _talking(f"look up the {what}s of {sweep.path}", remedy):
            page = _query(api, VIEWS, variables)
        viewer = _field(page, "viewer", "username")
        if page.get("project") is None:
            raise TrackingError(_no_project(sweep.path))
        views = page["project"].get("allViews") or {}
        for edge in views.get("edges") or []:
            node = edge.get("node") or {}
            user = (node.get("user") or {}).get("username")
            if node.get("displayName") == sweep.title and user == viewer:
                return node
        info = views.get("pageInfo") or {}
        cursor = info.get("endCursor")
        if not info.get("hasNextPage") or cursor in seen:
            return None
        seen.add(cursor)
        variables["cursor"] = cursor


def _upsert(api: Any, sweep: Sweep, what: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Create (no id) or update (by id) a view; the saved view's id and name."""
    from wandb_workspaces.reports.v2 import gql

    remedy = f"check that this login may write to {sweep.path}"
    with _talking(f"save the {what} '{sweep.title}' to {sweep.path}", remedy):
        saved = _query(api, gql.upsert_view, variables)
    view = _field(saved, "upsertView", "view")
    return {"id": _field(view, "id"), "name": _field(view, "name")}


def _random_name(n: int) -> str:
    return "".join(secrets.choice(NAME_ALPHABET) for _ in range(n))


def app_url(api: Any) -> str:
    """The W&B app's URL with its path and one trailing slash."""
    from wandb_workspaces._graphql import get_app_url

    return get_app_url(api).rstrip("/") + "/"


def view_url(base: str, sweep: Sweep, name: str) -> str:
    """A saved view's address: the project's workspace with ``nw=`` its name's core."""
    core = name.removeprefix("nw-").removesuffix("-v")
    return f"{base}{quote(sweep.entity)}/{quote(sweep.project)}?nw={quote(core)}"


def report_url(base: str, sweep: Sweep, view_id: str) -> str:
    """A report's address, as the app writes it: the title with every run of characters
    other than letters, digits and _ as one -, then -- and the id without its padding."""
    slug = re.sub(r"\W+", "-", sweep.title).strip("-")
    path = f"{quote(sweep.entity)}/{quote(sweep.project)}/reports"
    return f"{base}{path}/{quote(slug)}--{quote(view_id.rstrip('='))}"


# --- the definitions ---------------------------------------------------------------------


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

    # No entity or project here: wandb-workspaces would look the project up on W&B for each
    # run set as it builds the spec; saving names it in the spec (with_project).
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


def with_project(sweep: Sweep, spec: dict[str, Any], project_id: Any) -> dict[str, Any]:
    """A report spec whose run sets name the sweep's project (by its internal id, when
    known): a run set that names none may select no runs."""
    project = {"entityName": sweep.entity, "name": sweep.project}
    if project_id is not None:
        project["id"] = project_id
    for block in spec.get("blocks", []):
        for runset in (block.get("metadata") or {}).get("runSets", []):
            runset["project"] = dict(project)
    return spec


def specs(sweep: Sweep, with_report: bool) -> dict[str, Any]:
    """The definitions plus the W&B view and report specs they save as (what --print shows;
    the report's run sets without the project's internal id, which saving looks up)."""
    out = definitions(sweep)
    out["workspace"] = _dump(workspace(sweep))
    if with_report:
        out["report"] = _dump(report(sweep))
        with_project(sweep, out["report"]["spec"], None)
    return out


def _dump(item: Any) -> Any:
    """A wandb-workspaces object (or its model) as the JSON W&B stores."""
    model = item._to_model() if hasattr(item, "_to_model") else item
    return json.loads(model.model_dump_json(by_alias=True, exclude_none=True))


# --- saving ------------------------------------------------------------------------------


def save(api: Any, sweep: Sweep, with_report: bool) -> list[str]:
    """Create, or update when the viewer has one of that title, the view, and the report if
    asked; their URLs."""
    base = app_url(api)
    urls = [view_url(base, sweep, _save_view(api, sweep))]
    if with_report:
        urls.append(report_url(base, sweep, _save_report(api, sweep)))
    return urls


def _save_view(api: Any, sweep: Sweep) -> str:
    """Save the workspace view; its name."""
    model = workspace(sweep)._to_model()
    same = own_view(api, sweep, VIEW_TYPE)
    variables = {
        "id": same["id"] if same else None,
        "name": same["name"] if same else f"nw-{_random_name(11)}-v",
        "entityName": sweep.entity,
        "projectName": sweep.project,
        "description": "",
        "displayName": sweep.title,
        "type": VIEW_TYPE,
        "spec": model.spec.model_dump_json(by_alias=True, exclude_none=True),
    }
    return _upsert(api, sweep, "view", variables)["name"]


def _save_report(api: Any, sweep: Sweep) -> str:
    """Save the report; its id. An update replaces the blocks and description and keeps
    what readers added to the saved one (comments, authors, panel settings)."""
    from wandb_workspaces.reports.v2 import gql

    remedy = f"check the network and that this login may read {sweep.path}"
    variables = {"entityName": sweep.entity, "projectName": sweep.project}
    with _talking(f"look up the project {sweep.path}", remedy):
        found = _query(api, gql.projectInternalId, variables)
    if found.get("project") is None:
        raise TrackingError(_no_project(sweep.path))
    project_id = _field(found, "project", "internalId")
    new = report(sweep)
    same = own_view(api, sweep, REPORT_TYPE)
    if same is not None:
        with _talking(f"read the report '{sweep.title}' of {sweep.path}", remedy):
            saved = _query(api, gql.view_report, {"reportId": same["id"]})
        spec = _field(saved, "view", "spec")
        kept = json.loads(spec) if isinstance(spec, str) else spec
        new.id = same["id"]
        new._discussion_threads = kept.get("discussionThreads") or []
        new._authors = kept.get("authors") or []
        new._panel_settings = kept.get("panelSettings") or {}
    model = new._to_model()
    variables = {
        "id": same["id"] if same else None,
        "name": same["name"] if same else _random_name(12),
        "entityName": sweep.entity,
        "projectName": sweep.project,
        "description": model.description,
        "displayName": model.display_name,
        "type": REPORT_TYPE,
        "spec": json.dumps(with_project(sweep, _dump(model.spec), project_id)),
    }
    return _upsert(api, sweep, "report", variables)["id"]


# --- without W&B -------------------------------------------------------------------------


def offline_runs(root: Path, jobs: Iterable[JobLog]) -> list[str]:
    """Glob patterns of the jobs' offline W&B runs: one per experiment folder the jobs lie in
    (``runs/<name>``, ``sweeps/<name>``, named after the experiment or the sweep preset, not
    the W&B group), the folders below it as ``*``."""
    patterns: dict[str, None] = {}
    for job in jobs:
        try:
            parts = job.job_dir.resolve().relative_to(root.resolve()).parts
        except ValueError:  # a job folder outside the outputs folder: itself
            parts = ()
        if len(parts) >= 2:
            folder = root.joinpath(*parts[:2], *["*"] * (len(parts) - 2))
        else:
            folder = job.job_dir
        patterns.setdefault(f"{folder}/{OFFLINE_RUN}", None)
    return list(patterns)


def offline_help(root: Path, group: str | None) -> str:
    """How to get from offline runs to a dashboard: upload the offline runs of the group's
    jobs under ``root`` (the latest group's when ``group`` is None)."""
    groups = local_jobs(root) if root.is_dir() else {}
    name = group or next(iter(groups), None)
    patterns = offline_runs(root, groups.get(name, []))
    if patterns:
        where = f"the offline runs of group {name}'s jobs"
    else:
        folders = [p.format(root=root, name="<name>") for p in DEFAULT_JOB_FOLDERS]
        patterns = [f"{folder}/{OFFLINE_RUN}" for folder in folders]
        missing = f"no job of group {name}" if name else "no jobs"
        where = (
            f"the offline runs ({missing} under {root}; <name> is the folder the jobs were "
            "written to: the experiment's name, or the sweep preset's)"
        )
    lines = "\n".join(f"  wandb sync {p}" for p in patterns)
    return (
        f"Log in once with `wandb login` (or set WANDB_API_KEY), then upload {where}:\n"
        f"{lines}\n"
        "and run this command again. --print writes the definitions without W&B."
    )
