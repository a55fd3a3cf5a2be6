"""No silent wrong result: every job its own folder, however many start at once; a damaged
model is never scored from its cache; settings a job will not use, and data it cannot have,
are said; Ctrl-C and a W&B that cannot start are one line each."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, artifact_events, compose_config, job_dirs, run_entry

from spin.data import PromptFormatter, load_splits
from spin.entry import claim_folder
from spin.job import preflight
from spin.models import build_tiny

TINY = ("experiment=tiny", "logger=none")


def test_jobs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    folders = [claim_folder(str(tmp_path), "runs/tiny") for _ in range(3)]
    assert len(set(folders)) == 3 and all(Path(f).is_dir() for f in folders)
    # A name taken in the same second gets the next free suffix.
    stamps = [Path(f).name for f in folders]
    assert all(s == stamps[0] or s.rsplit("_", 1)[-1].isdigit() for s in stamps)


def popen_train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test worker may ignore SIGINT, and a child would inherit that: Ctrl-C as a
        # user's terminal delivers it needs the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture(scope="module")
def four_jobs(tmp_path_factory) -> Path:
    """Four jobs started together on one root: two identical, two differing in beta."""
    root = tmp_path_factory.mktemp("four")
    betas = ["0.1", "0.1", "0.1", "0.5"]
    procs = [popen_train(*TINY, f"loss.beta={b}", f"paths.root={root}") for b in betas]
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, out + err
    return root


def test_four_jobs_at_once_keep_four_records(four_jobs):
    jobs = job_dirs(four_jobs)
    assert len(jobs) == 4 and len({j.parent for j in jobs}) == 1
    betas = Counter()
    for job in jobs:
        config = (job / "config.yaml").read_text()
        report = json.loads((job / "report.json").read_text())
        records = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        beta = report["settings"]["beta"]
        betas[beta] += 1
        assert f"beta: {beta}" in config
        assert report["job_dir"] == str(job)
        # The metrics of one job only: one start, and no other job's training rows.
        assert sum(r.get("event") == "sweep" for r in records) == 1
    assert betas == Counter({0.1: 3, 0.5: 1})
    # Each model trained once, its loss named as the user chose it (loss=rpo), not as the
    # loss it runs as (sigmoid).
    logs = "".join((job / "train.log").read_text() for job in jobs)
    assert logs.count("training with loss rpo (NLL weight 1)") == 2


def test_four_jobs_at_once_build_each_artifact_once(four_jobs):
    built = Counter((e["kind"], e["key"]) for e in artifact_events(four_jobs) if e["built"])
    assert built and set(built.values()) == {1}
    folders = (four_jobs / "artifacts").glob("*/*")
    on_disk = {(p.parent.name, p.name) for p in folders if p.is_dir()}
    assert on_disk == set(built)


def test_a_damaged_model_is_not_scored_from_its_cache(four_jobs, tmp_path):
    """The old code printed the undamaged model's cached scores for a cut weights file."""
    trained = sorted((four_jobs / "artifacts" / "model").glob("*/model/model.safetensors"))[0]
    root = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(four_jobs), str(root)], check=True)
    damaged = root / trained.relative_to(four_jobs)
    damaged.write_bytes(damaged.read_bytes()[:1000])
    proc = run_entry(
        "evaluate.py", *TINY, f"model.path={damaged.parent}", f"paths.root={root}", check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "model.safetensors" in proc.stderr and "not a complete artifact" in proc.stderr
    assert "Scores" not in proc.stdout and "%" not in proc.stdout


def test_a_schedule_past_the_last_iteration_is_said(caplog, tmp_path):
    cfg = compose_config(*TINY, "+schedule.5.lr=1e-7", f"paths.root={tmp_path}")
    with caplog.at_level(logging.WARNING):
        preflight(cfg, trains=True)
    assert "schedule.5 is set, but this job builds iterations 0..0" in caplog.text


def test_readme_schedule_example_builds_the_iteration_it_sets():
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "+schedule.1.lr" in line)
    assert "iter=1" in line or "iter=2" in line, line


def test_cut_responses_are_counted_in_a_warning(caplog):
    fmt = PromptFormatter(build_tiny(seed=0)[1])
    with caplog.at_level(logging.WARNING):
        fmt.encode_pair("Q?", ["short", "x" * 500], 8, 64)
        fmt.encode_pair("Q?", ["short", "fine"], 8, 64)
        fmt.report_cuts("pair", 4, 64)
    assert "1 of 4 pair responses are longer than model.max_length=64" in caplog.text
    assert fmt.cut_lengths == []


def test_fewer_records_than_asked_are_said(caplog, tmp_path):
    data = tmp_path / "twenty.jsonl"
    rows = [{"prompt": f"What is {i} + 1?", "response": f"#### {i + 1}"} for i in range(20)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config(
        *TINY, "data=jsonl", f"data.path={data}", "data.n_train=16", "data.n_test=8"
    )
    with caplog.at_level(logging.WARNING):
        splits = load_splits(cfg.data)
    assert len(splits.train) == 12
    assert "data.n_train=16, but" in caplog.text and "has 12 usable train records" in caplog.text


def test_ctrl_c_is_one_line_that_says_the_command_resumes(tmp_path):
    # Training for many epochs: long enough to be interrupted in the middle of it.
    proc = popen_train(*TINY, f"paths.root={tmp_path}", "eval=none", "trainer.epochs=500")
    deadline = time.monotonic() + 300
    # Interrupt once the job is training (the start model is stored, the pairs' reference
    # pass done).
    while not list(tmp_path.glob("artifacts/reference/*/manifest.json")):
        assert time.monotonic() < deadline and proc.poll() is None, "the job never trained"
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in err
    # Besides the progress bars (stderr is theirs too), one line.
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("Interrupted: the SPIN job in "), err
    assert "Run the same command again to resume" in lines[0]


# No login at all; a key but no W&B to reach (a closed port), waited for 5 s at most.
NO_WANDB = {
    "no login": ({"WANDB_API_KEY": ""}, "No API key"),
    "no network": (
        {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"},
        "logger.init_timeout=5 s",
    ),
}


@pytest.mark.parametrize("case", NO_WANDB)
def test_online_tracking_that_cannot_start_stops_soon_in_one_line(case, tmp_path):
    env, reason = NO_WANDB[case]
    root = tmp_path / "outputs"
    started = time.monotonic()
    proc = run_entry(
        "train.py",
        "experiment=tiny",
        "logger=wandb",
        "logger.mode=online",
        "logger.init_timeout=5",
        f"paths.root={root}",
        check=False,
        env={"HOME": str(tmp_path), **env},
    )
    assert time.monotonic() - started < 120  # W&B's own wait was 1 min 42 s
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert reason in proc.stderr
    assert proc.stderr.startswith("Error: logger.mode=online") and "wandb login" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not [p for p in root.rglob("*") if p.is_file()], "an empty run folder was left"
