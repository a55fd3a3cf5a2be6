"""One job: validate its config, open tracking, run the chain and write ``report.json``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin import distributed
from spin.artifacts import write_json
from spin.chain import run
from spin.errors import ConfigError
from spin.generation import require_backend
from spin.lora import require_quantization
from spin.memory import peak_memory
from spin.stages.context import Context
from spin.tracking import SilentTracker, Tracker
from spin.validation import unused_settings, validate

log = logging.getLogger(__name__)

# The W&B config's and report.json's list of the keys the job's sweep varied.
SWEPT = "swept"
# The W&B config's record of the option chosen in each config group (``choice.loss``).
CHOICE = "choice"


def job_settings(cfg: DictConfig, n_train: int) -> dict[str, Any]:
    """The settings a report compares jobs by."""
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "loss": cfg.loss.name,
        "nll_weight": cfg.loss.nll_weight,
        "beta": cfg.loss.beta,
        "lr": cfg.trainer.lr,
        "epochs": cfg.trainer.epochs,
        "opponent": cfg.opponent.name,
        "lora": cfg.lora.enabled,
        "baseline": cfg.baseline.name,
        "iter": cfg.iter,
        "eval": cfg.eval.name,
        "n_train": n_train,
        "seed": cfg.seed,
    }


def require_outputs(root: Path) -> None:
    """Stop before any work unless ``root`` (paths.root) and its ``artifacts`` folder are
    folders this job can write in, or can be made."""
    for folder in (root, root / "artifacts"):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"paths.root={str(root)!r}: {folder} is a file; expected a folder (move the "
                "file aside, or choose another paths.root)"
            )
    writable = root / "artifacts" if (root / "artifacts").is_dir() else root
    if writable.is_dir() and not os.access(writable, os.W_OK | os.X_OK):
        raise ConfigError(
            f"paths.root={str(root)!r}: {writable} is not writable by this user; expected a "
            "folder this user can write, e.g. paths.root=outputs"
        )


def require_environment(cfg: DictConfig, trains: bool) -> None:
    """Fail before any work when this machine lacks what the settings need: the generation
    backend's package, QLoRA's bitsandbytes and GPU, and, for a job that ``trains``, the
    launch ``trainer.distributed`` and ``trainer.world_size`` describe. A dry run plans for
    hardware it need not be on, so only its launch is checked."""
    if not cfg.dry_run:
        if cfg.lora.enabled and cfg.lora.quantize is not None:
            require_quantization(cfg.lora.quantize)
        require_backend(cfg.generation.backend)
    if trains:
        distributed.check_launch(cfg)


def preflight(cfg: DictConfig, trains: bool) -> None:
    """Every check of the settings, the outputs root and the machine, before any work; a
    setting accepted but unused this run is said in a line."""
    validate(cfg)
    for line in unused_settings(cfg):
        log.warning("%s", line)
    require_outputs(Path(cfg.paths.root))
    require_environment(cfg, trains)


def start_job(
    cfg: DictConfig,
    job_dir: Path,
    job_name: str,
    job_type: str,
    trains: bool = False,
    swept: Mapping[str, Any] | None = None,
    choices: Mapping[str, str] | None = None,
) -> Tracker:
    """Validate the config and the machine before any work, save the config beside the
    job's outputs, open tracking. Under a distributed launch the main process does the job's
    writing and logging; the others get a tracker that records nothing. ``swept``, the keys
    the job's sweep varied and this job's values of them, goes into the W&B config beside
    the resolved config and the config groups' ``choices`` (what a dashboard groups by), and
    into the metrics mirror."""
    swept = dict(swept or {})
    preflight(cfg, trains)
    distributed.init()
    if not distributed.is_main():
        return SilentTracker()
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    tracker = Tracker(
        job_dir,
        cfg.logger,
        name=job_name,
        group=cfg.logger.group or cfg.name,
        job_type=job_type,
        config={
            **OmegaConf.to_container(cfg, resolve=True),
            SWEPT: list(swept),
            CHOICE: dict(choices or {}),
        },
    )
    tracker.event(event="sweep", swept=list(swept), values=swept)
    return tracker


def run_job(
    cfg: DictConfig,
    job_dir: Path,
    job_name: str,
    swept: Mapping[str, Any] | None = None,
    choices: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate, track and run one job; write ``report.json`` into ``job_dir``."""
    job_type = f"iter{cfg.iter}" if cfg.baseline.name == "none" else cfg.baseline.name
    tracker = start_job(cfg, job_dir, job_name, job_type, True, swept, choices)
    try:
        with peak_memory() as meter:
            ctx = Context(cfg, tracker)
            report = run(ctx)
        report |= {
            "peak_memory_gb": meter.peak_gb,
            "name": cfg.name,
            "job_dir": str(job_dir),
            "wandb": tracker.wandb_location,
            "overrides": job_name,
            "settings": job_settings(cfg, len(ctx.splits.train)),
            SWEPT: list(swept or {}),
        }
        final = report["rows"][-1]["scores"]
        tracker.summary({f"final/{k}": v for k, v in final.items()})
        if distributed.is_main():
            write_json(job_dir / "report.json", report)
    finally:
        tracker.finish()
    return report
