"""Entry point: compose the Hydra config and run the SPIN iteration chain.

``python train.py`` runs the default experiment (iteration 0); ``iter=2`` builds iterations
0..2 and reports 2; ``-m loss.beta=0.05,0.1 iter=0,1,2`` runs a sweep whose jobs share
every stage they have in common; ``dry_run=true`` validates and prints the plan (stages,
sizes, steps, estimated compute) without loading anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spin import distributed
from spin.entry import Job, hydra_script
from spin.job import CHOICE, run_job
from spin.planning import build_plan, format_plan
from spin.planning.fidelity import difference_lines
from spin.reporting.job_table import format_report
from spin.validation import validate

log = logging.getLogger("spin")
# What Hydra's sweeper writes into the sweep folder before it launches the jobs: the sweep's
# own command-line overrides (``loss.beta=0.05,0.1``), which each job sees only expanded.
MULTIRUN_FILE = "multirun.yaml"


def group_choices(hydra_cfg: DictConfig) -> dict[str, str]:
    """The option chosen in each of the job's config groups (``loss: rpo``), Hydra's own
    groups aside."""
    choices = hydra_cfg.runtime.choices
    return {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def swept_keys(hydra_cfg: DictConfig, choices: dict[str, str]) -> list[str]:
    """The config keys this job's sweep varied (``loss.beta``, ``iter``), in the order given:
    the sweep's overrides and ``hydra.sweeper.params`` that list, range or glob values. A
    swept config group (``loss=sigmoid,rpo``) is named ``choice.loss``, the option chosen:
    two options may differ in settings alone (``rpo`` is ``sigmoid`` with an NLL term). A
    single run varies nothing."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return []
    saved = Path(hydra_cfg.sweep.dir) / MULTIRUN_FILE
    sweep = OmegaConf.load(saved).hydra if saved.is_file() else hydra_cfg
    params = [f"{k}={v}" for k, v in (sweep.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *sweep.overrides.task])
    keys = [
        o.key_or_group.replace("/", ".")
        for o in overrides
        if o.is_sweep_override() and not o.is_hydra_override()
    ]
    return [f"{CHOICE}.{k}" if k in choices else k for k in dict.fromkeys(keys)]


def swept_values(cfg: DictConfig, keys: list[str], choices: dict[str, str]) -> dict[str, Any]:
    """The job's value of each swept key: the setting its plots and tables are labelled by."""
    prefix = f"{CHOICE}."
    return {
        key: choices[key[len(prefix) :]] if key.startswith(prefix) else OmegaConf.select(cfg, key)
        for key in keys
    }


@hydra_script(
    "config", "the SPIN job", "Run the same command again to resume: finished stages are reused"
)
def main(cfg: DictConfig, job: Job) -> None:
    if cfg.dry_run:
        validate(cfg)
        print(format_plan(build_plan(cfg)))
        print("\n".join(difference_lines(cfg)))
        return
    choices = group_choices(job.hydra)
    swept = swept_values(cfg, swept_keys(job.hydra, choices), choices)
    report = run_job(cfg, job.dir, job.name, swept, choices)
    if not distributed.is_main():
        return  # the main process reports for the whole launch
    print(f"\nOutputs: {job.dir}")
    print(f"Artifacts: {Path(cfg.paths.root) / 'artifacts'}")
    if report["wandb"]:
        print(f"W&B run: {report['wandb']}")
    print(f"\nScores (eval={cfg.eval.name}):")
    print(format_report(report))


if __name__ == "__main__":
    main()
