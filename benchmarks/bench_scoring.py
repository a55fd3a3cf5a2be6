"""Scoring one model, the project's way against lm-eval's own HF model, on the same tasks.

Both contenders are lm-eval runs of the default experiment's evaluation (the embedded tasks
and the held-out NLL of the test split) on the start model, loaded once and shared:

- ``project``: :class:`evaluation.model.LoadedModel` as the chain uses it (loglikelihood
  scored at continuation positions only, greedy generation that drops finished rows);
- ``hflm``: the same class with lm-eval's HFLM ``_loglikelihood_tokens`` and
  ``generate_until`` put back (what every commit before these two scored with).

Contenders alternate over the repeats (project first, then hflm first, ...), so neither
always meets the quieter machine; each run's load average is printed beside it. Reported:
median wall time and peak resident memory per contender (the process's high-water mark,
reset before each run), and whether every score agrees to 1e-6.

    python benchmarks/bench_scoring.py [--quick] [--repeats N] [override ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from lm_eval.models.huggingface import HFLM

# ruff: noqa: E402  (the imports below need the path above)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common

import evaluation.runner
from evaluation import flat_scores, plan_tasks, prepare, run_tasks
from evaluation.heldout import heldout_plan
from evaluation.model import LoadedModel
from spin.config import register_schema
from spin.memory import peak_memory
from spin.stages.context import Context
from spin.stages.scoring import heldout_docs
from spin.stages.start import start_model
from spin.tracking import Tracker
from spin.validation import validate

QUICK = ["data.n_test=8", "eval.limit=8"]
AGREEMENT = 1e-6


class HFLMScoring(LoadedModel):
    """The project's model wrapper with lm-eval's own scoring and generation."""

    _loglikelihood_tokens = HFLM._loglikelihood_tokens
    generate_until = LoadedModel.generate_with_hf


CONTENDERS = {"project": LoadedModel, "hflm": HFLMScoring}


def positive(text: str) -> int:
    """A whole number of at least 1, for argparse (its message names the option)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def config(root: Path, extra: list[str]):
    register_schema()
    with initialize_config_dir(config_dir=str(common.ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.root={root}", "logger=none", *extra])
    validate(cfg)
    return cfg


def score_once(contender: str, plans, model, tokenizer, cfg) -> dict:
    """One full scoring run: seconds, peak memory, scores."""
    evaluation.runner.LoadedModel = CONTENDERS[contender]
    try:
        with tempfile.TemporaryDirectory() as work:
            prepared = prepare(plans, Path(work))
            started = time.perf_counter()
            with peak_memory() as meter:
                results = run_tasks(prepared, model, tokenizer, cfg.eval)
            seconds = time.perf_counter() - started
    finally:
        evaluation.runner.LoadedModel = LoadedModel
    return {"seconds": seconds, "peak_gb": meter.peak_gb, "scores": flat_scores(results["summary"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 documents per task, 1 repeat")
    parser.add_argument(
        "--repeats", type=positive, default=None, help="runs per contender (2; 1 with --quick)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, as train.py takes them")
    args = parser.parse_args()
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 2)
    root = common.ROOT / "outputs" / "bench" / "scoring"
    cfg = config(root, [*(QUICK if args.quick else []), *args.overrides])
    ctx = Context(
        cfg,
        Tracker(root / "job", cfg.logger, name="bench", group="bench", job_type="eval", config={}),
    )
    start, _ = start_model(ctx)
    model, tokenizer = ctx.models.load(start)
    with tempfile.TemporaryDirectory() as docs_dir:
        heldout = heldout_plan(cfg.data.name, heldout_docs(ctx, start), Path(docs_dir))
        compare([*plan_tasks(cfg.eval), heldout], model, tokenizer, cfg, repeats)


def compare(plans, model, tokenizer, cfg, repeats: int) -> None:
    """Score with each contender ``repeats`` times, alternating, and print the comparison."""
    load = common.wait_for_quiet()
    print(f"machine: {common.machine()}")
    print(f"tasks: {[p.name for p in plans]}; limit {cfg.eval.limit}; load {load:.2f}")
    runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    for repeat in range(repeats):
        order = list(CONTENDERS) if repeat % 2 == 0 else list(reversed(CONTENDERS))
        for name in order:
            before = common.load_average()
            run = score_once(name, plans, model, tokenizer, cfg)
            runs[name].append(run)
            print(
                f"{name:8s} run {repeat + 1}: {run['seconds']:6.1f} s, peak "
                f"{run['peak_gb']:.2f} GB (load {before:.2f})",
                flush=True,
            )
    reference = runs["hflm"][0]["scores"]
    worst = max(
        abs(run["scores"][key] - value)
        for run in runs["project"]
        for key, value in reference.items()
    )
    seconds = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    peaks = {name: max(r["peak_gb"] for r in rs) for name, rs in runs.items()}
    for key, value in reference.items():
        print(f"  {key:32s} {value:.6f}")
    agree = "yes" if worst <= AGREEMENT else "NO"
    print(f"scores agree to {AGREEMENT:g}: {agree} (largest difference {worst:.1e})")
    print(
        f"RATIO scoring time project/hflm {seconds['project'] / seconds['hflm']:.2f} "
        f"({seconds['project']:.1f} s vs {seconds['hflm']:.1f} s, medians of {repeats}); "
        f"peak memory {peaks['project']:.2f} GB vs {peaks['hflm']:.2f} GB"
    )


if __name__ == "__main__":
    main()
