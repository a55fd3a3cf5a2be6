"""Entry point: score one model with the same config groups as train.py and print a table.

``python evaluate.py model.path=DIR eval=embedded`` scores a checkpoint the chain produced
(``outputs/artifacts/model/<key>/model``) or any Hugging Face model folder; ``model.path=ID``
a hub model (at ``model.revision``) that is in the Hugging Face cache or on a reachable hub;
``python evaluate.py`` scores the configured start model. A ``model.path`` that is neither
stops with exit code 2 before any work. Scores go through the same artifact store as
train.py, so scoring a model twice with the same settings does no work.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from spin.config import register_schema
from spin.console import capture_warnings
from spin.job import CONFIG_FAULTS, USER_FAULTS
from spin.reporting.job_table import format_table
from spin.stages.scoring import scores
from spin.standalone import describe, score

register_schema()
log = logging.getLogger("spin")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    capture_warnings()
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        identity, result = score(cfg, job_dir, hydra_cfg.job.override_dirname or cfg.name)
    except (*CONFIG_FAULTS, *USER_FAULTS) as err:
        log.error("Cannot evaluate: %s", err)
        sys.exit(2)
    print(f"\nModel: {describe(identity)}")
    print(f"Outputs: {job_dir}")
    if result:
        seconds = result["summary"]["seconds"]
        print(f"Scoring time: {seconds:.0f} s (when first scored)\n")
    print(format_table([(cfg.model.path or cfg.model.name, scores(result))]))


if __name__ == "__main__":
    main()
