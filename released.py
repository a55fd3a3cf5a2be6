"""Entry point: score the SPIN authors' released models and write them beside the paper's table.

``python released.py`` scores UCLA-AGI/zephyr-7b-sft-full-SPIN-iter0 .. -iter3, the SFT model
they started from (alignment-handbook/zephyr-7b-sft-full at the pinned revision) and the DPO
row's model (alignment-handbook/zephyr-7b-dpo-full) with eval=leaderboard, through
evaluate.py's scoring code and artifact store, and writes table.md and table.csv (measured,
paper, difference per task) into the job's folder. The models are listed in
conf/released.yaml; ``released.models.<row>.path=DIR`` points one at a local copy.
``dry_run=true`` lists the models and the estimated cost of scoring them. A model that cannot
be loaded here (offline and not cached) stops the command with exit code 2 before any work.
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
from spin.released import dry_run, run
from spin.validation import validate

register_schema()
log = logging.getLogger("spin")


@hydra.main(config_path="conf", config_name="released", version_base="1.3")
def main(cfg: DictConfig) -> None:
    capture_warnings()
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        validate(cfg)
        if cfg.dry_run:
            print(dry_run(cfg))
            return
        scored = run(cfg, job_dir, hydra_cfg.job.override_dirname or cfg.name)
    except (*CONFIG_FAULTS, *USER_FAULTS) as err:
        log.error("Cannot score the released models: %s", err)
        sys.exit(2)
    print("\nScored:")
    print("\n".join(f"  {line}" for line in scored))
    print(f"\nOutputs: {job_dir} (table.md, table.csv)\n")
    print((job_dir / "table.md").read_text())


if __name__ == "__main__":
    main()
