"""Entry point: score one model with the same config groups as train.py and print a table.

``python evaluate.py model.path=DIR eval=embedded`` scores a checkpoint the chain produced
(``outputs/artifacts/model/<key>/model``) or any Hugging Face model folder;
``python evaluate.py`` scores the configured start model. Scores go through the same
artifact store as train.py, so scoring a model twice with the same settings does no work.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from evaluation.standalone import score
from spin.config import ConfigError, register_schema
from spin.pipeline import scores
from spin.report import format_table

register_schema()
log = logging.getLogger("spin")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        ref, result = score(cfg, job_dir, hydra_cfg.job.override_dirname or cfg.name)
    except ConfigError as err:
        log.error("Cannot evaluate: %s", err)
        sys.exit(2)
    print(f"\nModel: {ref.location} (key {ref.key})")
    print(f"Outputs: {job_dir}")
    if result:
        seconds = result["summary"]["seconds"]
        print(f"Scoring time: {seconds:.0f} s (when first scored)\n")
    print(format_table([(cfg.model.name, scores(result))]))


if __name__ == "__main__":
    main()
