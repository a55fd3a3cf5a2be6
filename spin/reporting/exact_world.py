"""The exact-world study's report (docs/exact_world.md): KL to p_data and to the SFT sample per
iteration per method with seed ranges, the theorem's trajectory beside the trained one, and
the effective step each trained iteration took.

It reads jobs of ``data.source=world`` below the given folders (any others are skipped) and
loads their models from the artifact store to get each one's exact distribution over the
test prompts' responses (:func:`spin.theory.model_log_probs`): the theorem's trajectory
starts from the SFT model's, and a trained step is compared with the theorem's.

The effective step: with the logistic loss at its population minimiser, an iteration moves
``log q`` by ``(1/beta) (log p_data - log q)`` plus a constant per prompt. Regressing the
step a run actually took on ``log p_data - log q`` (per prompt, weighted by p_data) gives its
slope ``s``; the error then shrinks as ``(1 - s)`` per iteration, so ``0 < s < 2`` converges,
``s`` near ``1/beta`` means the iteration reached its minimiser, and ``s`` far below it means
a few small steps damped the update (the regime the paper's beta = 0.1 needs, since
``1/beta = 10`` would overshoot).
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from spin.data import load_splits
from spin.data.world import World, distinct_prompts
from spin.reporting.collect import find_reports
from spin.theory import forward_kl, saved_model_log_probs, trajectory, within_language

log = logging.getLogger(__name__)

# Metrics tabulated per iteration (flat score names without the data prefix).
MEASURES = {
    "kl_fwd": "KL(p_data || model), nats per response",
    "kl_in": "KL(p_data || model renormalised over the language), as the theorem's trajectory",
    "train_kl_emp": "KL(SFT sample || model) on training prompts",
    "mass_out": "model mass outside the language",
}
THEORY_BETAS = (0.1, 0.5, 1.0)


@dataclass
class WorldJob:
    """One job of the study: its setting's label, seed, and per model (start, then each
    iteration or the baseline) the scores and the model's directory."""

    label: str
    start: str
    seed: int
    beta: float
    cfg: DictConfig
    scores: list[dict[str, float]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    identical: list[float] = field(default_factory=list)


def start_label(cfg: DictConfig) -> str:
    """The SFT model a job starts from: its sample size and epochs."""
    return f"SFT N={cfg.sft.n_train} x{cfg.sft.epochs:g} ep"


def method_label(cfg: DictConfig) -> str:
    """What the job trains: a baseline, or a loss with its beta, opponent and regime."""
    if cfg.baseline.name != "none":
        return f"{cfg.baseline.name} {cfg.baseline.epochs:g} ep"
    loss = cfg.loss.name if cfg.loss.nll_weight == 0 else "rpo"
    opponent = "sampled" if cfg.generation.do_sample else "greedy"
    return f"{loss} b={cfg.loss.beta:g} {opponent} {cfg.trainer.epochs:g}ep lr={cfg.trainer.lr:g}"


def model_folder(root: Path, key: str) -> str:
    folder = root / "artifacts" / "model" / key
    return str(folder / "model" if (folder / "model").is_dir() else folder)


def _iteration_metrics(job_dir: Path) -> tuple[list[float], list[float]]:
    """The last step's reward margin and the pair set's identical fraction per iteration."""
    margins: dict[int, float] = {}
    identical: dict[int, float] = {}
    path = job_dir / "metrics.jsonl"
    for line in path.open() if path.is_file() else []:
        row = json.loads(line)
        if "train/rewards/margins" in row:
            margins[row["iteration"]] = row["train/rewards/margins"]
        if "generation/identical_fraction" in row:
            identical[row["iteration"]] = row["generation/identical_fraction"]
    return [margins[t] for t in sorted(margins)], [identical[t] for t in sorted(identical)]


def load_jobs(paths: list[Path]) -> list[WorldJob]:
    """Every exact-world job below ``paths``."""
    jobs = []
    for report_path in find_reports(paths):
        cfg_path = report_path.parent / "config.yaml"
        if not cfg_path.is_file():
            continue
        cfg = OmegaConf.load(cfg_path)
        if cfg.data.source != "world" or not cfg.sft.enabled:
            continue
        report = json.loads(report_path.read_text())
        root = Path(cfg.paths.root)
        prefix = f"{cfg.data.name}_"
        job = WorldJob(
            method_label(cfg), start_label(cfg), int(cfg.seed), float(cfg.loss.beta), cfg
        )
        for row in report["rows"]:
            scores = {k.removeprefix(prefix): v for k, v in row["scores"].items() if "/" not in k}
            job.scores.append(scores | renormalised(scores))
            job.models.append(model_folder(root, row["model_key"]))
        job.margins, job.identical = _iteration_metrics(report_path.parent)
        jobs.append(job)
    return jobs


def renormalised(scores: dict[str, float]) -> dict[str, float]:
    """KL(p_data || q') of the model renormalised over the language, q' = q / (1 - out):
    the forward KL less the log of the mass it keeps in the language."""
    if "kl_fwd" not in scores or "mass_out" not in scores:
        return {}
    return {"kl_in": scores["kl_fwd"] + float(np.log1p(-scores["mass_out"]))}


def _test_setting(job: WorldJob) -> tuple[World, list[str], np.ndarray]:
    world = World(job.cfg.data.world)
    prompts = distinct_prompts(load_splits(job.cfg.data).test)
    log_p = np.stack([world.log_probs(x) for x in prompts])
    return world, prompts, log_p


def step_slope(log_q0: np.ndarray, log_q1: np.ndarray, log_p: np.ndarray) -> float:
    """Slope of the step ``log q1 - log q0`` on ``log p - log q0``, per prompt with its own
    intercept, weighted by p_data; the mean over prompts."""
    slopes = []
    for before, after, target in zip(log_q0, log_q1, log_p, strict=True):
        weight = np.exp(target)
        x = target - before
        y = after - before
        x_c = x - np.average(x, weights=weight)
        y_c = y - np.average(y, weights=weight)
        slopes.append(float(np.sum(weight * x_c * y_c) / np.sum(weight * x_c * x_c)))
    return float(np.mean(slopes))


@dataclass
class Analysis:
    """What the study's tables and plots show."""

    jobs: list[WorldJob]
    # start label -> beta -> KL(p_data || theorem's p_t) for t = 0, 1, ...
    theory: dict[str, dict[float, list[float]]]
    # job index -> effective step slope per trained iteration
    slopes: dict[int, list[float]]


def analyse(jobs: list[WorldJob], steps: int) -> Analysis:
    theory: dict[str, dict[float, list[float]]] = {}
    slopes: dict[int, list[float]] = {}
    for index, job in enumerate(jobs):
        trained = job.cfg.baseline.name == "none"
        if job.start in theory and not trained:
            continue  # a baseline's model enters only the tables, read from its scores
        world, prompts, log_p = _test_setting(job)
        wanted = job.models if trained else job.models[:1]
        dists = [within_language(saved_model_log_probs(job.cfg, m, world, prompts)) for m in wanted]
        if job.start not in theory:
            theory[job.start] = {
                beta: [
                    float(forward_kl(log_p, q).mean())
                    for q in trajectory(dists[0], log_p, beta, steps)
                ]
                for beta in THEORY_BETAS
            }
        if trained:
            slopes[index] = [step_slope(a, b, log_p) for a, b in itertools.pairwise(dists)]
    return Analysis(jobs, theory, slopes)


def _groups(jobs: list[WorldJob]) -> dict[tuple[str, str], list[int]]:
    groups: dict[tuple[str, str], list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault((job.start, job.label), []).append(index)
    return groups


def _cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def measure_table(analysis: Analysis, measure: str) -> list[str]:
    """Rows: start and method; columns: SFT, then each iteration (mean [seed range])."""
    jobs = analysis.jobs
    width = max(len(j.scores) for j in jobs)
    head = ["SFT", *(f"iter {t}" for t in range(width - 1))]
    lines = [
        f"| start | method | seeds | {' | '.join(head)} |",
        "|---|---|---|" + "---|" * len(head),
    ]
    for (start, label), members in sorted(_groups(jobs).items()):
        cells = []
        for column in range(width):
            values = [
                jobs[i].scores[column][measure]
                for i in members
                if column < len(jobs[i].scores) and measure in jobs[i].scores[column]
            ]
            cells.append(_cell(values))
        lines.append(f"| {start} | {label} | {len(members)} | {' | '.join(cells)} |")
    return lines


def theory_table(analysis: Analysis) -> list[str]:
    steps = len(next(iter(next(iter(analysis.theory.values())).values())))
    head = ["SFT", *(f"step {t}" for t in range(1, steps))]
    lines = [f"| start | beta | {' | '.join(head)} |", "|---|---|" + "---|" * len(head)]
    for start, by_beta in sorted(analysis.theory.items()):
        for beta, values in by_beta.items():
            lines.append(f"| {start} | {beta:g} | {' | '.join(f'{v:.3g}' for v in values)} |")
    return lines


def dynamics_table(analysis: Analysis) -> list[str]:
    """Per trained setting: effective step slope, last reward margin and identical fraction
    per iteration (means over seeds)."""
    lines = [
        "| start | method | 1/beta | step slope s per iteration | reward margin | identical |",
        "|---|---|---|---|---|---|",
    ]
    jobs = analysis.jobs
    for (start, label), members in sorted(_groups(jobs).items()):
        trained = [i for i in members if i in analysis.slopes]
        if not trained:
            continue
        per_iter = list(zip(*(analysis.slopes[i] for i in trained), strict=False))
        margins = list(zip(*(jobs[i].margins for i in trained), strict=False))
        identical = list(zip(*(jobs[i].identical for i in trained), strict=False))

        def join(columns: list[tuple[float, ...]], digits: int) -> str:
            return ", ".join(f"{statistics.fmean(c):.{digits}f}" for c in columns)

        lines.append(
            f"| {start} | {label} | {1 / jobs[trained[0]].beta:g} | {join(per_iter, 2)} | "
            f"{join(margins, 2)} | {join(identical, 2)} |"
        )
    return lines


def plot(analysis: Analysis, out: Path) -> list[Path]:
    """KL to p_data and to the SFT sample per iteration, one panel per start model, the
    theorem's trajectories dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    jobs = analysis.jobs
    starts = sorted({j.start for j in jobs})
    for measure in ("kl_in", "kl_fwd", "train_kl_emp"):
        title = MEASURES[measure]
        fig, axes = plt.subplots(1, len(starts), figsize=(6 * len(starts), 4.5), squeeze=False)
        for ax, start in zip(axes[0], starts, strict=True):
            for (group_start, label), members in sorted(_groups(jobs).items()):
                if group_start != start:
                    continue
                series = [[s[measure] for s in jobs[i].scores if measure in s] for i in members]
                length = min(len(s) for s in series)
                values = np.array([s[:length] for s in series])
                xs = np.arange(length) - 1  # the SFT model at -1
                ax.plot(xs, values.mean(0), marker="o", label=label)
                if len(members) > 1:
                    ax.fill_between(xs, values.min(0), values.max(0), alpha=0.2)
            if measure == "kl_in":
                for beta, kl in analysis.theory[start].items():
                    ax.plot(np.arange(len(kl)) - 1, kl, "k--", alpha=0.4 + 0.2 * beta)
                    ax.annotate(f"theorem b={beta:g}", (len(kl) - 2, kl[-1]), fontsize=7)
            ax.set_yscale("log")
            ax.set_title(start, fontsize=9)
            ax.set_xlabel("iteration (-1: SFT)")
            ax.set_ylabel(title, fontsize=8)
            ax.legend(fontsize=6)
        path = out / f"exact_world_{measure}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_exact_world(paths: list[Path], out: Path, steps: int = 6) -> list[Path]:
    """exact_world.md and its figures in ``out``, if any exact-world job is below ``paths``."""
    jobs = load_jobs(paths)
    if not jobs:
        return []
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(jobs, steps)
    sections: list[Any] = []
    for measure, title in MEASURES.items():
        sections += [f"### {title}", "", *measure_table(analysis, measure), ""]
    sections += [
        "### The theorem's trajectory from each SFT model (KL to p_data, renormalised)",
        "",
        *theory_table(analysis),
        "",
    ]
    sections += [
        "### Effective step, reward margins, identical pairs",
        "",
        *dynamics_table(analysis),
        "",
    ]
    path = out / "exact_world.md"
    path.write_text("\n".join(sections))
    return [path, *plot(analysis, out)]
