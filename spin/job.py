"""One job: validate its config, open tracking, run the pipeline and write ``report.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin import distributed
from spin.artifacts import write_json
from spin.config import validate
from spin.pipeline import Pipeline
from spin.tracking import SilentTracker, Tracker


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
    }


def start_job(
    cfg: DictConfig, job_dir: Path, job_name: str, job_type: str, trains: bool = False
) -> Tracker:
    """Validate the config before any work (for a job that ``trains``, also that it was
    launched as ``trainer.distributed`` and ``trainer.world_size`` say), save it beside the
    job's outputs, open tracking. Under a distributed launch the main process does the job's
    writing and logging; the others get a tracker that records nothing."""
    validate(cfg)
    if trains:
        distributed.check_launch(cfg)
    distributed.init()
    if not distributed.is_main():
        return SilentTracker()
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return Tracker(
        job_dir,
        cfg.logger,
        name=job_name,
        group=cfg.logger.group or cfg.name,
        job_type=job_type,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def run_job(cfg: DictConfig, job_dir: Path, job_name: str) -> dict[str, Any]:
    """Validate, track and run one job; write ``report.json`` into ``job_dir``."""
    job_type = f"iter{cfg.iter}" if cfg.baseline.name == "none" else cfg.baseline.name
    tracker = start_job(cfg, job_dir, job_name, job_type, trains=True)
    try:
        pipeline = Pipeline(cfg, tracker)
        report = pipeline.run()
        report |= {
            "name": cfg.name,
            "job_dir": str(job_dir),
            "wandb": tracker.wandb_location,
            "overrides": job_name,
            "settings": job_settings(cfg, len(pipeline.splits.train)),
        }
        final = report["rows"][-1]["scores"]
        tracker.summary({f"final/{k}": v for k, v in final.items()})
        if distributed.is_main():
            write_json(job_dir / "report.json", report)
    finally:
        tracker.finish()
    return report
