"""dashboard.py and report.py's dashboard panels on a real tiny sweep logged to offline W&B."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, compose_config, job_dirs, run_entry, run_train
from hydra.types import RunMode
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from spin.names import LOSS_ALIASES
from spin.tracking import read_metrics

SWEEP = ("-m", "experiment=tiny", "logger=wandb", "loss.beta=0.05,0.1", "iter=0,1")
# W&B's run file: a 7-byte header, then LevelDB-log records in 32 KiB blocks.
HEADER, BLOCK, RECORD_HEAD = 7, 32768, 7


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    run_train(*SWEEP, f"paths.root={root}")
    return root


@pytest.fixture(scope="module")
def printed(sweep_root) -> dict:
    args = ("my-entity/spin", "--group", "tiny", "--report", "--print", "--outputs")
    return json.loads(run_entry("dashboard.py", *args, str(sweep_root)).stdout)


def logged_keys(job: Path) -> set[str]:
    """Every metric and table key a job's metrics.jsonl holds."""
    records = read_metrics(job)
    keys = {k for r in records if r["type"] == "metrics" for k in r if k != "type"}
    return keys | {r["key"] for r in records if r["type"] == "table"}


def offline_config(job: Path) -> dict:
    """The config the job's offline W&B run recorded, read from its run file."""
    (path,) = job.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, buf, config = path.read_bytes(), HEADER, b"", {}
    while pos + RECORD_HEAD <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEAD:  # a block's tail too short for a record
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEAD])
        buf += data[pos + RECORD_HEAD : pos + RECORD_HEAD + length]
        pos += RECORD_HEAD + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record.FromString(buf)
            buf = b""
            kind_name = record.WhichOneof("record_type")
            if kind_name in ("run", "config"):
                items = record.run.config if kind_name == "run" else record.config
                config |= {i.key: json.loads(i.value_json) for i in items.update}
    return config


def referenced_keys(printed: dict) -> set[str]:
    panels = [p for section in printed["sections"].values() for p in section]
    return {k for p in panels for k in (p["x"], *p["ys"], *p["reference"])} | set(printed["tables"])


def test_printed_definitions_reference_only_keys_every_job_logged(sweep_root, printed):
    referenced = referenced_keys(printed)
    assert {"eval/average", "start/average", "train/loss", "eval/summary"} <= referenced
    assert all(printed["sections"].values())
    for job in job_dirs(sweep_root):
        assert referenced <= logged_keys(job), job
    # The W&B view and report specs show the same keys.
    for spec in (printed["workspace"], printed["report"]):
        text = json.dumps(spec)
        assert all(json.dumps(key)[1:-1] in text for key in referenced)


def test_runs_are_grouped_by_the_keys_the_sweep_varied(sweep_root, printed):
    assert printed["group_by"] == ["loss.beta", "iter"]
    jobs = job_dirs(sweep_root)
    assert len(jobs) == 4
    for job in jobs:
        config = offline_config(job)
        assert config["swept"] == printed["group_by"]
        for key in printed["group_by"]:
            assert OmegaConf.select(OmegaConf.create(config), key) is not None
        assert json.loads((job / "report.json").read_text())["swept"] == printed["group_by"]


def test_without_credentials_it_exits_2_saying_how_to_log_in_and_sync(sweep_root, tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_CONFIG_DIR": str(tmp_path)}
    args = ("my-entity/spin", "--group", "tiny", "--outputs", str(sweep_root))
    proc = run_entry("dashboard.py", *args, check=False, env=env)
    assert proc.returncode == 2
    assert "wandb login" in proc.stderr
    assert f"wandb sync {sweep_root}/sweeps/tiny/*/*/wandb/offline-run-*" in proc.stderr
    assert list(sweep_root.glob("sweeps/tiny/*/*/wandb/offline-run-*"))


def test_report_draws_the_dashboard_sections_from_the_metrics_mirror(sweep_root, tmp_path):
    proc = run_entry("report.py", str(sweep_root / "sweeps"), "--out", str(tmp_path))
    for name in ("training.png", "self_play.png", "cost.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
        assert str(tmp_path / name) in proc.stdout
    # The dynamics table: one row per chain (beta) and iteration, from the longest job.
    rows = [r for r in (tmp_path / "dynamics.md").read_text().splitlines() if "beta=" in r]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [
        ("loss.beta=0.05", "0"),
        ("loss.beta=0.05", "1"),
        ("loss.beta=0.1", "0"),
        ("loss.beta=0.1", "1"),
    ]
    assert all(0 <= float(c[6]) <= 1 for c in cells)  # the accuracy is a fraction


def test_swept_keys_come_from_the_sweeps_overrides_and_preset(tmp_path):
    spec = importlib.util.spec_from_file_location("train_entry", ROOT / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    saved = {
        "hydra": {
            "overrides": {"task": ["loss=sigmoid,ipo", "iter=1", "hydra.verbose=true,false"]},
            "sweeper": {"params": {"loss.beta": "0.05,0.1", "iter": "2", "seed": "range(2)"}},
        }
    }
    OmegaConf.save(saved, tmp_path / train.MULTIRUN_FILE)
    hydra_cfg = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(dir=str(tmp_path)))
    choices = {"loss": "rpo", "model": "tiny"}
    keys = train.swept_keys(hydra_cfg, choices)
    assert keys == ["loss.beta", "seed", "choice.loss"]
    assert train.swept_keys(SimpleNamespace(mode=RunMode.RUN), choices) == []
    # A swept group is labelled by the option chosen: rpo runs as sigmoid (with settings).
    cfg = compose_config("experiment=tiny", "loss=rpo", "loss.beta=0.05")
    assert LOSS_ALIASES[cfg.loss.name] == "sigmoid"
    values = train.swept_values(cfg, keys, choices)
    assert values == {"loss.beta": 0.05, "seed": 0, "choice.loss": "rpo"}
