"""A run's console holds the project's log lines, its progress bars and the closing table;
third-party warnings and the Trainer's per-step values go to the job's log file, in full."""

from __future__ import annotations

import os
import re

import datasets
from conftest import job_dirs, run_entry
from huggingface_hub import utils as hub_utils
from lm_eval.api import task
from tqdm import tqdm
from transformers.utils import logging as transformers_logging

from spin import console
from spin.tracking import read_metrics

# What lm-eval warns on every evaluation of a loaded model with a generation length set.
LM_EVAL_WARNINGS = (
    "Passed an already-initialized model through `pretrained`",
    "specified through cli, these settings will update set parameters",
)
# The Trainer's per-step dict as the stock progress callback prints it, and as a log line.
PRINTED_STEP = re.compile(r"\{'loss': ")
LOGGED_STEP = re.compile(r"\[spin\.callbacks\.steps\]\[DEBUG\] - step (\d+): \{'loss': ")
# The libraries' own progress bars a job used to show: transformers writing each checkpoint
# and loading weights, datasets preparing and saving its files.
THIRD_PARTY_BARS = (
    "Writing model shards",
    "Loading weights",
    "Generating test split",
    "Creating json from Arrow format",
    "Saving the dataset",
)
# A finished bar with no description (lm-eval's over each task's documents), on a line of
# its own once the carriage returns between a bar's updates are lines too.
UNLABELLED_BAR = re.compile(r"^\s*100%\|", re.MULTILINE)


def test_console_shows_the_projects_lines_and_the_log_file_the_rest(tmp_path):
    # With W&B (offline) as in the default run, and not silenced as the other tests have it.
    args = ("experiment=tiny", "logger=wandb", f"paths.root={tmp_path}")
    proc = run_entry("train.py", *args, env={"WANDB_SILENT": "false"})
    console = proc.stdout + proc.stderr
    (job,) = job_dirs(tmp_path)
    log_file = (job / "train.log").read_text()

    for warning in LM_EVAL_WARNINGS:
        assert warning not in console
        assert warning in log_file
    assert "[lm_eval." not in console and "[transformers" not in console
    assert "wandb: WARNING" not in console
    assert not PRINTED_STEP.search(console)
    for bar in THIRD_PARTY_BARS:
        assert bar not in console
        assert bar not in log_file  # bars, not log records: nowhere
    assert not UNLABELLED_BAR.search(console.replace("\r", "\n"))

    # Every training step the metrics mirror holds is in the log file with its values.
    trained = [r["train/global_step"] for r in read_metrics(job) if "train/loss" in r]
    assert [int(step) for step in LOGGED_STEP.findall(log_file)] == trained

    # The project's own lines, the stages' progress bars and the closing table stay.
    assert "[spin.artifacts][INFO] - Built model/" in proc.stdout
    assert re.search(
        r"\[spin\.stages\.training\]\[INFO\] - iter 0: training with loss rpo \(NLL weight 1\)",
        proc.stdout,
    )
    for bar in ("iter 0: generate", "iter 0: reference", "train: 100%", "Running generate_until"):
        assert bar in proc.stderr
    assert "Running loglikelihood requests: 100%" in proc.stderr
    assert f"Outputs: {job}" in proc.stdout
    assert "Scores (eval=embedded):" in proc.stdout
    assert re.search(r"^average\s+\d+\.\d%\s+\d+\.\d%$", proc.stdout, re.MULTILINE)


def test_third_party_bars_are_turned_off_once_and_labelled_ones_kept(monkeypatch):
    # Restored afterwards: the switch, lm-eval's bar, the environment the call sets.
    monkeypatch.setattr(console, "_quiet", False)
    monkeypatch.setattr(task, "tqdm", tqdm)
    for name in console.QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    shown = (
        transformers_logging.is_progress_bar_enabled(),
        not hub_utils.are_progress_bars_disabled(),
        datasets.is_progress_bar_enabled(),
    )
    try:
        console.quiet_third_party()
        wrapped = task.tqdm
        monkeypatch.setattr(console, "_quiet", False)
        console.quiet_third_party()  # a second entry point's call wraps nothing twice
        assert task.tqdm is wrapped
        assert not transformers_logging.is_progress_bar_enabled()
        assert hub_utils.are_progress_bars_disabled()
        assert datasets.is_progress_bar_enabled() is False
        assert all(os.environ[name] == "1" for name in console.QUIET_ENV)  # for child processes
        with task.tqdm(range(3)) as bar, task.tqdm(range(3), desc="scoring") as named:
            assert bar.disable and not named.disable
    finally:
        if shown[0]:
            transformers_logging.enable_progress_bar()
        if shown[1]:
            hub_utils.enable_progress_bars()
        if shown[2]:
            datasets.enable_progress_bars()
