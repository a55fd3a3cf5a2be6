"""Entry point: score the SPIN authors' released models and write them beside the paper's table.

``python released.py`` scores UCLA-AGI/zephyr-7b-sft-full-SPIN-iter0 .. -iter3, the SFT model
they started from (alignment-handbook/zephyr-7b-sft-full at the pinned revision) and the DPO
row's model (alignment-handbook/zephyr-7b-dpo-full) with eval=leaderboard_v040 (the paper's
tasks as lm-eval 0.4.0 scored them), through evaluate.py's scoring code and artifact store,
and writes table.md and table.csv (measured, paper, difference per task) into the job's
folder. The models are listed in conf/released.yaml; ``released.models.<row>.path=DIR``
points one at a local copy.
``dry_run=true`` lists the models and the estimated cost of scoring them. A model that cannot
be loaded here (offline and not cached) stops the command with exit code 2 before any work.
"""

from __future__ import annotations

from omegaconf import DictConfig

from spin.entry import Job, hydra_script
from spin.released import dry_run, run
from spin.validation import validate


@hydra_script(
    "released",
    "scoring the released models",
    "Run the same command again to resume: models already scored are reused",
)
def main(cfg: DictConfig, job: Job) -> None:
    validate(cfg)
    if cfg.dry_run:
        print(dry_run(cfg))
        return
    scored = run(cfg, job.dir, job.name)
    print("\nScored:")
    print("\n".join(f"  {line}" for line in scored))
    print(f"\nOutputs: {job.dir} (table.md, table.csv)\n")
    print((job.dir / "table.md").read_text())


if __name__ == "__main__":
    main()
