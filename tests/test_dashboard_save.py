"""dashboard.py's save path against a recorded W&B: a real ``wandb.Api`` whose GraphQL
transport (``ServiceApi.execute_graphql``, where wandb 0.31 and wandb-workspaces send every
query) answers from an in-memory project, so the first save, the update, the URLs and the
failures are checked without a server. What a real server would answer differently is not
checked here (docs/dashboards.md)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ROOT, run_entry
from wandb.apis.public.service_api import ServiceApi
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

from spin.errors import TrackingError
from spin.logbook import Logbook, Scored
from spin.reporting import dashboard as dash
from spin.reporting.panels import score_panels

ENTITY, PROJECT, GROUP = "my-entity", "spin", "tiny"
KEYS = frozenset(
    {"eval/arith_mc2/mc2", "eval/average", "start/arith_mc2/mc2", "start/average", "train/loss"}
)
SWEEP = dash.Sweep(ENTITY, PROJECT, GROUP, KEYS, ("loss.beta", "iter"))
TITLE = "SPIN: tiny"
# The app URL wandb 0.31 derives from its default API host (a path segment), and one of a
# self-hosted server under a path.
APP_URLS = {
    "https://api.wandb.ai": "https://forge.coreweave.com/wandb/",
    "https://wandb.example.org/path/": "https://wandb.example.org/path/",
}


class Recorded:
    """A W&B project as its GraphQL API answers: views (workspace views and reports) with
    their owners, the viewer, and every request received, in order. ``fail`` maps an
    operation name to the error its request raises."""

    def __init__(self, viewer: str = "me", project: bool = True) -> None:
        self.viewer = viewer
        self.project = project
        self.views: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}

    def add(self, user: str, display_name: str, view_type: str, spec: str = "{}") -> dict:
        view = {
            "id": base64.b64encode(f"View:{len(self.views) + 1}".encode()).decode(),
            "name": f"nw-{len(self.views):011d}-v",
            "displayName": display_name,
            "description": "",
            "type": view_type,
            "user": {"username": user},
            "spec": spec,
        }
        self.views.append(view)
        return view

    def of(self, view_type: str, title: str = TITLE) -> list[dict[str, Any]]:
        return [v for v in self.views if v["type"] == view_type and v["displayName"] == title]

    def operations(self) -> list[str]:
        return [op for op, _ in self.requests]

    def execute(self, query: str, variables: Any = None, timeout: Any = None, **kw: Any) -> Any:
        op = re.search(r"(?:query|mutation)\s+(\w+)", query).group(1)
        variables = dict(variables or {})
        self.requests.append((op, variables))
        if op in self.fail:
            raise self.fail[op]
        answer = getattr(self, f"_{op}", None)
        assert answer is not None, f"unexpected request {op}"
        return kw.get("parse", json.loads)(json.dumps(answer(variables)))

    def _viewer(self) -> dict[str, Any]:
        return {"id": "VXNlcjox", "username": self.viewer, "entity": self.viewer}

    def _GetDefaultEntity(self, variables: dict) -> dict:
        return {"viewer": self._viewer()}

    def _Runs(self, variables: dict) -> dict:
        return {"project": None}  # only asked of a missing project here

    def _SpinDashboardViews(self, variables: dict) -> dict:
        if not self.project:
            return {"viewer": self._viewer(), "project": None}
        views = [v for v in self.views if v["type"] == variables["viewType"]]
        start = int(variables["cursor"] or 0)
        end = start + variables["first"]
        page = [{"node": {k: v[k] for k in ("id", "name", "displayName", "user")}} for v in views]
        return {
            "viewer": {"username": self.viewer},
            "project": {
                "allViews": {
                    "edges": page[start:end],
                    "pageInfo": {"hasNextPage": end < len(views), "endCursor": str(end)},
                }
            },
        }

    def _ProjectInternalId(self, variables: dict) -> dict:
        return {
            "project": {"id": "UHJvamVjdDoxMjM=", "internalId": "123"} if self.project else None
        }

    def _SpecificReport(self, variables: dict) -> dict:
        (view,) = [v for v in self.views if v["id"] == variables["reportId"]]
        return {"view": view}

    def _upsertView(self, variables: dict) -> dict:
        fields = {k: variables[k] for k in ("name", "displayName", "description", "type", "spec")}
        if variables.get("id"):
            (view,) = [v for v in self.views if v["id"] == variables["id"]]
            view.update(fields)
        else:
            view = self.add(self.viewer, variables["displayName"], variables["type"])
            view.update(fields)
        return {"upsertView": {"view": view, "inserted": not variables.get("id")}}


@pytest.fixture(params=sorted(APP_URLS))
def wandb_api(request, monkeypatch, tmp_path):
    """A logged-in ``wandb.Api`` on ``Recorded()`` and the app URL it reports."""
    server = Recorded()
    for name, value in {
        "HOME": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path),
        "WANDB_API_KEY": "k" * 40,
        "WANDB_BASE_URL": request.param,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_APP_URL", raising=False)
    monkeypatch.setattr(ServiceApi, "authenticate", lambda self: None)
    monkeypatch.setattr(
        ServiceApi, "execute_graphql", lambda self, *a, **k: server.execute(*a, **k)
    )
    return SimpleNamespace(api=dash.connect(), server=server, app=APP_URLS[request.param])


def sent_spec(server: Recorded, view_type: str) -> dict:
    (view,) = server.of(view_type)
    return json.loads(view["spec"])


def test_first_save_creates_the_view_and_report_at_urls_under_the_app_path(wandb_api):
    api, server, app = wandb_api.api, wandb_api.server, wandb_api.app
    view_url, report_url = dash.save(api, SWEEP, with_report=True)

    (view,) = server.of("project-view")
    (report,) = server.of("runs")
    assert view["user"]["username"] == report["user"]["username"] == "me"
    core = view["name"].removeprefix("nw-").removesuffix("-v")
    assert re.fullmatch(r"[a-z0-9]{11}", core)
    assert view_url == f"{app}{ENTITY}/{PROJECT}?nw={core}"
    assert report_url == f"{app}{ENTITY}/{PROJECT}/reports/SPIN-tiny--{report['id'].rstrip('=')}"
    upserts = [v for op, v in server.requests if op == "upsertView"]
    assert [(u["id"], u["type"], u["entityName"], u["projectName"]) for u in upserts] == [
        (None, "project-view", ENTITY, PROJECT),
        (None, "runs", ENTITY, PROJECT),
    ]
    # The view shows the group's runs, grouped by the swept keys, with the score panels.
    (runset,) = sent_spec(server, "project-view")["section"]["runSets"]
    assert GROUP in json.dumps(runset["filters"])
    assert [g["name"] for g in runset["grouping"]] == ["loss.value.beta", "iter.value"]
    assert "start/average" in json.dumps(sent_spec(server, "project-view"))
    # The report's panels select the group's runs of this very project.
    runsets = [
        runset
        for block in sent_spec(server, "runs")["blocks"]
        for runset in block.get("metadata", {}).get("runSets", [])
    ]
    assert runsets
    for runset in runsets:
        assert runset["project"] == {"entityName": ENTITY, "name": PROJECT, "id": "123"}
        assert GROUP in json.dumps(runset["filters"])


def test_a_second_save_updates_the_viewers_own_view_and_report_found_on_a_later_page(
    wandb_api,
):
    api, server, app = wandb_api.api, wandb_api.server, wandb_api.app
    # Another user's view and report of the same title come first; more than two pages of
    # other views before the viewer's.
    theirs = [server.add("someone-else", TITLE, kind) for kind in ("project-view", "runs")]
    for i in range(2 * dash.PAGE + 10):
        server.add("me" if i % 2 else "someone-else", f"other {i}", "project-view")
    dash.save(api, SWEEP, with_report=True)
    mine = {kind: server.of(kind)[-1] for kind in ("project-view", "runs")}
    comments = {"discussionThreads": [{"id": "t1", "comments": ["keep me"]}], "blocks": []}
    mine["runs"]["spec"] = json.dumps(comments)
    n_views = len(server.views)
    server.requests.clear()

    view_url, report_url = dash.save(api, SWEEP, with_report=True)

    assert len(server.views) == n_views  # updated, no duplicate
    # Views: every page up to the viewer's (the third); reports: the first page holds it.
    looked_up = [(v["viewType"], v["cursor"]) for op, v in server.requests if "Views" in op]
    assert looked_up == [
        ("project-view", None),
        ("project-view", "50"),
        ("project-view", "100"),
        ("runs", None),
    ]
    upserts = [v for op, v in server.requests if op == "upsertView"]
    assert [(u["id"], u["name"]) for u in upserts] == [
        (mine["project-view"]["id"], mine["project-view"]["name"]),
        (mine["runs"]["id"], mine["runs"]["name"]),
    ]
    assert [t["spec"] for t in theirs] == ["{}", "{}"]  # another user's, untouched
    core = mine["project-view"]["name"].removeprefix("nw-").removesuffix("-v")
    assert view_url == f"{app}{ENTITY}/{PROJECT}?nw={core}"
    assert report_url.startswith(f"{app}{ENTITY}/{PROJECT}/reports/SPIN-tiny--")
    # The update replaced the report's blocks and kept its comments.
    report = json.loads(mine["runs"]["spec"])
    assert report["discussionThreads"] == comments["discussionThreads"]
    assert "eval/average" in json.dumps(report["blocks"])


def test_wandb_failures_become_one_line_tracking_errors(wandb_api):
    api, server = wandb_api.api, wandb_api.server
    refused = "GraphQL errors: permission denied\n  on upsertView: user may not write"
    server.fail["upsertView"] = WandbApiFailedError(refused)
    with pytest.raises(TrackingError) as caught:
        dash.save(api, SWEEP, with_report=False)
    message = str(caught.value)
    assert "\n" not in message
    assert f"cannot save the view '{TITLE}' to {ENTITY}/{PROJECT}" in message
    assert "permission denied" in message and "may write" in message

    server.fail["SpinDashboardViews"] = OSError("Connection refused")
    with pytest.raises(TrackingError, match="cannot look up the views of my-entity/spin"):
        dash.save(api, SWEEP, with_report=False)

    server.fail.clear()
    server.project = False
    with pytest.raises(TrackingError, match="W&B has no project my-entity/spin"):
        dash.save(api, SWEEP, with_report=True)
    with pytest.raises(TrackingError, match="W&B has no project my-entity/spin") as caught:
        dash.wandb_sweep(api, ENTITY, PROJECT, GROUP)  # the library's ValueError
    assert isinstance(caught.value.__cause__, ValueError)


def fake_job(root: Path, folder: str, name: str, group: str | None) -> Path:
    """A finished job's folder as local_jobs reads it."""
    job = root / folder
    job.mkdir(parents=True)
    (job / "config.yaml").write_text(json.dumps({"name": name, "logger": {"group": group}}))
    (job / "report.json").write_text("{}")
    rows = [{"type": "metrics", "iteration": 0, "eval/average": 0.5}]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return job


def load_dashboard_entry():
    spec = importlib.util.spec_from_file_location("dashboard_entry", ROOT / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_py_exits_2_with_one_line_on_a_graphql_error_and_a_missing_project(
    wandb_api, tmp_path, capsys
):
    outputs = tmp_path / "outputs"
    fake_job(outputs, "sweeps/beta/2026-12-01_10-00-00/loss.beta=0.1", "smol", "tiny")
    entry = load_dashboard_entry()
    wandb_api.server.fail["upsertView"] = WandbApiFailedError("GraphQL errors: unknown field")
    args = [f"{ENTITY}/{PROJECT}", "--group", "tiny", "--outputs", str(outputs)]
    assert entry.main(args) == 2
    err = capsys.readouterr().err
    *advice, last = err.splitlines()
    assert last.startswith(f"Error: cannot save the view '{TITLE}'")
    assert "unknown field" in last and "Traceback" not in err
    # The sync advice names the folder the group's jobs are in (a sweep preset's), not the group.
    assert f"  wandb sync {outputs}/sweeps/beta/*/*/wandb/offline-run-*" in advice

    # No job of the group here and no project on W&B: the runs lookup's ValueError.
    assert entry.main([f"{ENTITY}/{PROJECT}", "--group", "other", "--outputs", str(outputs)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"Error: W&B has no project {ENTITY}/{PROJECT}")
    assert "Traceback" not in err


def test_without_credentials_it_says_how_to_log_in_in_one_line(tmp_path):
    # In a process of its own: wandb keeps the key an earlier test's Api was given.
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_CONFIG_DIR": str(tmp_path)}
    args = (f"{ENTITY}/{PROJECT}", "--group", "tiny", "--outputs", str(tmp_path / "none"))
    proc = run_entry("dashboard.py", *args, check=False, env=env)
    assert proc.returncode == 2
    *advice, last = proc.stderr.splitlines()
    assert last.startswith("Error: cannot log in to W&B (")
    assert "`wandb login`" in last and "Traceback" not in proc.stderr
    assert f"  wandb sync {tmp_path}/none/runs/<name>/*/wandb/offline-run-*" in advice


def test_offline_help_names_the_folders_of_the_groups_jobs(tmp_path):
    # logger.group=grp: the jobs' folders are named after the experiment and the preset.
    fake_job(tmp_path, "runs/exp/2026-12-01_10-00-00", "exp", "grp")
    fake_job(tmp_path, "sweeps/preset/2026-12-01_11-00-00/seed=1", "exp", "grp")
    fake_job(tmp_path, "runs/exp/2026-12-01_09-00-00", "exp", None)  # group exp
    text = dash.offline_help(tmp_path, "grp")
    lines = [line.strip() for line in text.splitlines() if "wandb sync" in line]
    assert sorted(lines) == [
        f"wandb sync {tmp_path}/runs/exp/*/wandb/offline-run-*",
        f"wandb sync {tmp_path}/sweeps/preset/*/*/wandb/offline-run-*",
    ]
    assert "grp" not in " ".join(lines)
    missing = dash.offline_help(tmp_path, "nowhere")
    assert "no job of group nowhere" in missing
    assert f"wandb sync {tmp_path}/runs/<name>/*/wandb/offline-run-*" in missing


class Tracker:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, row: dict) -> None:
        self.rows.append(row)

    def log_table(self, key: str, columns: list, rows: list, **axes: Any) -> None:
        pass


def test_baseline_scores_land_in_the_score_panels(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps([{"step": 1, "loss": 0.7}]))
    trained = SimpleNamespace(path=tmp_path)
    evaluation = {"summary": {"tasks": {"arith_mc2": {"metric": "mc2", "value": 0.8}}}}
    evaluation["summary"]["average"] = 0.8
    tracker = Tracker()
    book = Logbook(tracker, n_samples=0)
    model = SimpleNamespace(key="m")
    book.record_baseline(Scored("DPO", "dpo", None, model, evaluation, trained), 2)
    book.record_baseline(Scored("SPIN 1 + DPO", "spin_dpo", 1, model, evaluation, trained), 1)
    scored = [r for r in tracker.rows if "dpo/average" in r or "spin_dpo/average" in r]
    # The metrics.jsonl row without an axis stays; the level follows at iterations 0..2.
    assert [r.get("iteration") for r in scored if "dpo/average" in r] == [None, 0, 1, 2]
    assert [r["iteration"] for r in scored if "spin_dpo/average" in r] == [1]
    keys = {k for r in tracker.rows for k in r} | {"eval/average", "start/average"}
    (average,) = [p for p in score_panels(keys) if p.title == "average"]
    assert average.reference == ("start/average", "dpo/average", "spin_dpo/average")
