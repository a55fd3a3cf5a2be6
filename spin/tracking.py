"""Experiment tracking: W&B plus a local ``metrics.jsonl`` mirror of everything logged.

One W&B run per job. A job ``iter=k`` logs every iteration 0..k it builds or reuses, with
two step axes: ``train/global_step`` (cumulative over iterations) for the training curves
and ``iteration`` for per-iteration values (generation statistics, evaluation, cost), so a
dashboard grouped by ``group`` (the experiment) can compare iterations and betas side by
side; ``job_type`` is ``iter<k>`` and the run name is built from the job's overrides.

The mirror is the source of truth for tests and reports: W&B's offline mode writes only
a binary file. Nothing secret is ever logged: configs come from the composed experiment,
never from the environment. W&B prints nothing to the console (the job prints where its run
lives); its run history and summary at the end are in the run and the mirror.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from spin.errors import TrackingError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# What training logs per pair, averaged since the last log (the order of
# spin.trainer.SPINTrainer._record), under ``train/``.
PAIR_METRICS = (
    "rewards/real",
    "rewards/generated",
    "rewards/margins",
    "rewards/accuracies",
    "logps/real",
    "logps/generated",
)

STEP_AXES = {
    "train/*": "train/global_step",
    "eval/*": "iteration",
    "start/*": "iteration",
    "generation/*": "iteration",
    "reference/*": "iteration",
    "time/*": "iteration",
    "throughput/*": "iteration",
}


class Tracker:
    """Logs rows to W&B (unless disabled) and appends them to ``metrics.jsonl``."""

    def __init__(
        self,
        run_dir: Path,
        logger_cfg: Any,
        *,
        name: str,
        group: str,
        job_type: str,
        config: dict[str, Any],
    ) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / METRICS_FILE
        self.wandb_run = None
        if logger_cfg.name == "wandb" and logger_cfg.mode != "disabled":
            self.wandb_run = self._start_wandb(logger_cfg, name, group, job_type, config)

    def _start_wandb(
        self, cfg: Any, name: str, group: str, job_type: str, config: dict[str, Any]
    ) -> Any:
        # W&B's own lines (login, sync hints, its log folder) stay off the console, where
        # the job prints where its run lives; WANDB_SILENT=false brings them back.
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        try:
            run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                mode=cfg.mode,
                dir=str(self.run_dir),
                id=uuid.uuid4().hex[:16],  # never another job's, even in the same second
                name=name,
                group=group,
                job_type=job_type,
                tags=list(cfg.tags),
                config=config,
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, init_timeout=cfg.init_timeout),
            )
        except Exception as err:  # wandb raises its own types, ValueError and OSError alike
            # W&B's own advice names its Python setting; ours is logger.init_timeout.
            reason = " ".join(str(err).split()).split(" Consider increasing")[0]
            raise TrackingError(
                f"logger.mode={cfg.mode}: W&B could not start the run ({reason}; it waits "
                f"at most logger.init_timeout={cfg.init_timeout:g} s). Run `wandb login` "
                "where W&B is reachable, or track offline (logger.mode=offline, the default) "
                "and upload later with `wandb sync`"
            ) from err
        for pattern, axis in STEP_AXES.items():
            run.define_metric(axis)
            run.define_metric(pattern, step_metric=axis)
        return run

    @property
    def wandb_location(self) -> str | None:
        """Where the W&B run lives: a URL when online, the local run directory when offline."""
        if self.wandb_run is None:
            return None
        local = str(Path(self.wandb_run.dir).parent)
        # An offline run has no URL, and asking it for one prints a warning.
        return local if self.wandb_run.offline else self.wandb_run.url or local

    def log(self, row: dict[str, Any]) -> None:
        self._mirror({"type": "metrics", **row})
        if self.wandb_run is not None:
            self.wandb_run.log(row)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], **axes: Any) -> None:
        self._mirror({"type": "table", "key": key, "columns": columns, "rows": rows, **axes})
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Table(columns=columns, data=rows), **axes})

    def event(self, **fields: Any) -> None:
        """Record a non-metric fact (an artifact built or reused) in the mirror only."""
        self._mirror({"type": "event", **fields})

    def summary(self, values: dict[str, Any]) -> None:
        self._mirror({"type": "summary", **values})
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()

    def _mirror(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")


class SilentTracker(Tracker):
    """The tracker of every process but the main one in a distributed launch: the main
    process logs for the whole job (one W&B run, one metrics.jsonl), the others nothing."""

    def __init__(self) -> None:
        self.run_dir = None
        self.metrics_path = None
        self.wandb_run = None

    def _mirror(self, record: dict[str, Any]) -> None:
        """Nothing: the main process's tracker records the job."""


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a job's mirror, in the order they were logged."""
    path = run_dir / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
