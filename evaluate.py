"""Entry point: score one model with the same config groups as train.py and print a table.

``python evaluate.py model.path=DIR eval=embedded`` scores a checkpoint the chain produced
(``outputs/artifacts/model/<key>/model``) or any Hugging Face model folder; ``model.path=ID``
a hub model (at ``model.revision``) that is in the Hugging Face cache or on a reachable hub;
``python evaluate.py`` scores the configured start model. A ``model.path`` that is neither
stops with exit code 2 before any work. Scores go through the same artifact store as
train.py, so scoring a model twice with the same settings does no work.
"""

from __future__ import annotations

from omegaconf import DictConfig

from spin.entry import Job, hydra_script
from spin.reporting.job_table import format_table
from spin.stages.scoring import scores
from spin.standalone import describe, score


@hydra_script(
    "config", "scoring the model", "Run the same command again to resume: finished tasks are reused"
)
def main(cfg: DictConfig, job: Job) -> None:
    identity, result = score(cfg, job.dir, job.name)
    print(f"\nModel: {describe(identity)}")
    print(f"Outputs: {job.dir}")
    if result:
        seconds = result["summary"]["seconds"]
        print(f"Scoring time: {seconds:.0f} s (when first scored)\n")
    print(format_table([(cfg.model.path or cfg.model.name, scores(result))]))


if __name__ == "__main__":
    main()
