"""The self-play dynamics of each chain as a table (dynamics.md): per iteration, the share of
identical pairs and the training means of the rewards, their margin and accuracy, and the
policy's log-probabilities of the real and generated responses.

Read from the jobs' metrics.jsonl (spin/reporting/panels.py), so it needs no W&B. The values
are means over the iteration's logged steps, each itself a mean over that step's pairs;
variants' rewards are on their own scales (a reference-free loss's reward is its scaled
policy log-probability), so compare a variant's iterations with each other, and variants by
their margins' sign and accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from spin.reporting.panels import ITERATION, JobLog
from spin.tracking import PAIR_METRICS

TRAINING = PAIR_METRICS
IDENTICAL = "generation/identical_fraction"
HEADER = (
    "Chain",
    "Iteration",
    "Identical pairs",
    "Real reward",
    "Generated reward",
    "Margin",
    "Accuracy",
    "log p real",
    "log p generated",
)


def _iterations(job: JobLog) -> dict[int, dict[str, list[float]]]:
    """Per iteration, every logged value of the training metrics and the identical share."""
    found: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in job.rows:
        if ITERATION not in row:
            continue
        for key in (*(f"train/{name}" for name in TRAINING), IDENTICAL):
            if key in row:
                found[row[ITERATION]][key].append(row[key])
    return found


def _cells(values: dict[str, list[float]]) -> list[str]:
    def mean(key: str, digits: int) -> str:
        return f"{np.mean(values[key]):.{digits}f}" if values.get(key) else "-"

    rewards = [mean(f"train/{name}", 3) for name in TRAINING[:3]]
    logps = [mean(f"train/{name}", 2) for name in TRAINING[4:]]
    return [mean(IDENTICAL, 3), *rewards, mean("train/rewards/accuracies", 2), *logps]


def dynamics_markdown(jobs: Sequence[JobLog]) -> str | None:
    """One row per chain and iteration (the longest job of each chain: ``iter=2`` holds
    ``iter=0``'s); None when no job logged training."""
    chains: dict[str, tuple[JobLog, dict[int, dict[str, list[float]]]]] = {}
    for job in jobs:
        logged = _iterations(job)
        if logged and len(logged) >= len(chains.get(job.chain, (job, {}))[1]):
            chains[job.chain] = (job, logged)
    if not chains:
        return None
    lines = [
        "# Self-play dynamics per iteration",
        "",
        "Means over each iteration's logged training steps; identical pairs: the share of "
        "generations equal to the real response.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| :--- | " + " | ".join("---:" for _ in HEADER[1:]) + " |",
    ]
    for chain, (job, logged) in sorted(chains.items()):
        for t, values in sorted(logged.items()):
            row = [chain or job.job_dir.name, str(t), *_cells(values)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
