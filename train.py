"""Entry point: compose the Hydra config and run the SPIN iteration chain.

``python train.py`` runs the default experiment (iteration 0); ``iter=2`` builds iterations
0..2 and reports 2; ``-m loss.beta=0.05,0.1 iter=0,1,2`` runs a sweep whose jobs share
every stage they have in common; ``dry_run=true`` validates and prints the plan (stages,
sizes, steps, estimated compute) without loading anything.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from spin import distributed
from spin.config import register_schema
from spin.console import capture_warnings
from spin.job import CONFIG_FAULTS, USER_FAULTS, run_job
from spin.planning import build_plan, format_plan
from spin.planning.fidelity import difference_lines
from spin.reporting.job_table import format_report
from spin.validation import validate

register_schema()
log = logging.getLogger("spin")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    capture_warnings()
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    job_name = hydra_cfg.job.override_dirname or cfg.name
    try:
        if cfg.dry_run:
            validate(cfg)
            print(format_plan(build_plan(cfg)))
            print("\n".join(difference_lines(cfg)))
            return
        report = run_job(cfg, job_dir, job_name)
    except CONFIG_FAULTS as err:
        log.error("Invalid config: %s", err)
        sys.exit(2)
    except USER_FAULTS as err:
        log.error("%s", err)
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    if not distributed.is_main():
        return  # the main process reports for the whole launch
    print(f"\nOutputs: {job_dir}")
    print(f"Artifacts: {Path(cfg.paths.root) / 'artifacts'}")
    if report["wandb"]:
        print(f"W&B run: {report['wandb']}")
    print(f"\nScores (eval={cfg.eval.name}):")
    print(format_report(report))


if __name__ == "__main__":
    main()
