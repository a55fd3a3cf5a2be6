"""The panels that compare a sweep's iterations, defined once: ``dashboard.py`` builds them as a
W&B workspace and report, ``report.py`` draws them as PNG files from the jobs' metrics.jsonl,
so both show the same metric keys (the ones spin/logbook.py logs).

Score panels are found in the logged keys rather than listed, so every task, metric and
average a job's evaluation logs under ``eval/`` gets one, with the start model's score
(``start/<name>``, logged at every iteration) and the baselines' (``<kind>/<name>``,
spin/logbook.py) as its reference lines.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spin.reporting.collect import find_reports
from spin.tracking import METRICS_FILE, read_metrics

ITERATION = "iteration"
GLOBAL_STEP = "train/global_step"
SCORE_PREFIX = "eval/"
START_PREFIX = "start/"
# The baselines' scores (spin/baselines.py), logged against iteration as the start model's
# are: SFT + more epochs and DPO at every iteration, SPIN + DPO at the iteration it follows.
BASELINE_PREFIXES = ("sft_more/", "dpo/", "spin_dpo/")
TABLES = ("eval/summary", "generation/samples")


@dataclass(frozen=True)
class Panel:
    """One plot: the ``ys`` keys against ``x``, and constant ``reference`` lines."""

    title: str
    x: str
    ys: tuple[str, ...]
    reference: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.x, *self.ys, *self.reference)


def _against_step(*names: str) -> list[Panel]:
    """Training metrics on the chain's cumulative step axis, one panel each."""
    return [Panel(name, GLOBAL_STEP, (f"train/{name}",)) for name in names]


TRAINING = _against_step(
    "loss", "rewards/real", "rewards/generated", "rewards/margins", "rewards/accuracies"
)
SELF_PLAY = [
    Panel("identical pairs (fraction)", ITERATION, ("generation/identical_fraction",)),
    Panel("log-probabilities", GLOBAL_STEP, ("train/logps/real", "train/logps/generated")),
]
COST = [
    Panel("stage time (s)", ITERATION, ("time/generation_s", "time/reference_s", "time/train_s")),
    Panel(
        "peak resident memory (GB)",
        ITERATION,
        tuple(f"memory/{stage}_peak_gb" for stage in ("generation", "reference", "train", "eval")),
    ),
    Panel("generation (tokens/s)", ITERATION, ("throughput/generation_tokens_per_s",)),
    Panel("reference pass (tokens/s)", ITERATION, ("throughput/reference_tokens_per_s",)),
    Panel("training (pairs/s)", ITERATION, ("throughput/train_pairs_per_s",)),
]


def score_panels(keys: Collection[str]) -> list[Panel]:
    """One panel per ``eval/...`` key logged (tasks' metrics, the average, and any other
    score evaluation adds), against iteration, the average last; the start model's and the
    baselines' scores of the same name, where logged, as reference lines."""
    scores = [k for k in keys if k.startswith(SCORE_PREFIX) and k not in TABLES]
    names = sorted(k[len(SCORE_PREFIX) :] for k in scores)
    names.sort(key=lambda name: name == "average")
    return [
        Panel(
            name,
            ITERATION,
            (SCORE_PREFIX + name,),
            tuple(k for p in (START_PREFIX, *BASELINE_PREFIXES) if (k := p + name) in keys),
        )
        for name in names
    ]


def sections(keys: Collection[str]) -> dict[str, list[Panel]]:
    """The dashboard's sections for a sweep that logged ``keys`` (its metric keys)."""
    return {
        "Scores by iteration": score_panels(keys),
        "Training": TRAINING,
        "Self-play": SELF_PLAY,
        "Cost": COST,
    }


@dataclass(frozen=True)
class JobLog:
    """What one job's metrics.jsonl holds for the panels."""

    job_dir: Path
    swept: dict[str, Any] = field(default_factory=dict)  # swept key -> this job's value
    rows: list[dict[str, Any]] = field(default_factory=list)  # its metric records

    @property
    def keys(self) -> set[str]:
        return {key for row in self.rows for key in row if key != "type"}

    @property
    def chain(self) -> str:
        """The swept settings but ``iter``: jobs with the same chain log the same iterations
        (``iter=1`` holds ``iter=0``'s), so plots draw them as one line."""
        return ", ".join(f"{k}={v}" for k, v in self.swept.items() if k != "iter")


def read_job(job_dir: Path) -> JobLog:
    """A job's metric records and its sweep's keys and values (none for older jobs): the
    latest run's, where the job was run again into the same folder."""
    records = read_metrics(job_dir)
    sweep = next((r for r in reversed(records) if r.get("event") == "sweep"), {})
    rows = [r for r in records if r["type"] == "metrics"]
    return JobLog(job_dir, sweep.get("values", {}), rows)


def swept_keys(jobs: Iterable[JobLog]) -> list[str]:
    """Every key any of the jobs' sweeps varied, in first-seen order."""
    return list(dict.fromkeys(key for job in jobs for key in job.swept))


def read_jobs(paths: Iterable[Path]) -> list[JobLog]:
    """The jobs at or below ``paths`` (sweep folders, job folders, report.json files) that
    kept a metrics mirror."""
    dirs = [report.parent for report in find_reports(paths)]
    return [read_job(d) for d in dirs if (d / METRICS_FILE).is_file()]
