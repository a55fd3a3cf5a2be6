"""A run's console holds the project's log lines, its progress bars and the closing table;
third-party warnings and the Trainer's per-step values go to the job's log file, in full."""

from __future__ import annotations

import re

from conftest import job_dirs, run_entry

from spin.tracking import read_metrics

# What lm-eval warns on every evaluation of a loaded model with a generation length set.
LM_EVAL_WARNINGS = (
    "Passed an already-initialized model through `pretrained`",
    "specified through cli, these settings will update set parameters",
)
# The Trainer's per-step dict as the stock progress callback prints it, and as a log line.
PRINTED_STEP = re.compile(r"\{'loss': ")
LOGGED_STEP = re.compile(r"\[spin\.callbacks\.steps\]\[DEBUG\] - step (\d+): \{'loss': ")


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

    # Every training step the metrics mirror holds is in the log file with its values.
    trained = [r["train/global_step"] for r in read_metrics(job) if "train/loss" in r]
    assert [int(step) for step in LOGGED_STEP.findall(log_file)] == trained

    # The project's own lines, the stages' progress bars and the closing table stay.
    assert "[spin.artifacts][INFO] - Built model/" in proc.stdout
    assert "iter 0: training with the sigmoid loss" in proc.stdout
    for bar in ("iter 0: generate", "iter 0: reference", "train: 100%", "Running generate_until"):
        assert bar in proc.stderr
    assert f"Outputs: {job}" in proc.stdout
    assert "Scores (eval=embedded):" in proc.stdout
    assert re.search(r"^average\s+\d+\.\d%\s+\d+\.\d%$", proc.stdout, re.MULTILINE)
