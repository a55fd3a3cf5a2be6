"""One whole SPIN iteration of the default experiment, stage by stage.

Runs iteration 0 of the chain's own code (generation, reference pass, training,
evaluation) under a fresh output root, so every stage is built rather than reused, and
reports each stage's time as the chain records it (the costs of the report's row), its
tokens per second and achieved FLOP/s as a fraction of this machine's float32
matrix-multiply peak measured in the same run (``torch.mm``):

- generation: 2 * params * (prompt + generated tokens);
- reference pass: 2 * params * tokens it ran (pairs packed, the shared prompt once);
- training: 6 * params * tokens it ran, per epoch;
- evaluation: wall time only (its tokens are lm-eval's business).

Quick mode shrinks the data (8 train and 8 test problems, 64 new tokens, eval limit 8);
full mode is the default experiment as ``python train.py`` runs it.

    python benchmarks/bench_iteration.py [--quick] [override ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from datasets import load_from_disk
from hydra import compose, initialize_config_dir

# The benchmarks' helpers and the repository's packages, whichever directory runs this.
# ruff: noqa: E402  (the imports below need the path above)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common

from spin.artifacts import read_json
from spin.chain import spin
from spin.config import iteration_settings, register_schema
from spin.logbook import Logbook
from spin.logprobs import packed_length
from spin.stages.context import Context
from spin.stages.generation import generate
from spin.stages.opponents import opponent_references
from spin.stages.prompts import formatter
from spin.stages.start import start_model
from spin.tracking import Tracker
from spin.validation import validate

QUICK = [
    "data.n_train=8",
    "data.n_test=8",
    "generation.max_new_tokens=64",
    "trainer.batch_size=4",
    "eval.limit=8",
]


def config(mode: str, root: Path, extra: list[str]):
    register_schema()
    with initialize_config_dir(config_dir=str(common.ROOT / "conf"), version_base="1.3"):
        quick = QUICK if mode == "quick" else []
        overrides = [f"paths.root={root}", "logger=none", *quick, *extra]
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    return cfg


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of ~20")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides, as train.py takes them (e.g. model=tiny)"
    )
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default_root = common.ROOT / "outputs" / "bench" / "iteration" / f"{mode}-{stamp}"
    cfg = config(mode, default_root, args.overrides)
    root = Path(cfg.paths.root)  # a paths.root override wins
    load = common.wait_for_quiet()
    peak = common.matmul_peak_flops()
    print(f"machine: {common.machine()}")
    print(f"mode: {mode}; load {load:.2f}; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    tracker = Tracker(
        root / "job", cfg.logger, name="bench", group="bench", job_type="iter0", config={}
    )
    ctx = Context(cfg, tracker)
    start, _ = start_model(ctx)  # materialising the start model is not part of an iteration
    policy, tokenizer = ctx.models.load(start)
    params = sum(p.numel() for p in policy.parameters())
    fmt = formatter(cfg, tokenizer)
    prompt_tokens = sum(
        len(tokenizer(fmt.prompt_text(r["prompt"]), add_special_tokens=False)["input_ids"])
        for r in ctx.splits.train
    )

    book = Logbook(tracker, cfg.eval.n_samples)
    _, chain_s = timed(spin, ctx, book, start)
    costs = book.rows[-1]["costs"]
    # Asking again reuses what the chain built: the artifacts whose sizes give the FLOPs.
    gen = generate(ctx, start, 0)
    settings = iteration_settings(cfg, 0)
    (ref, _), *_ = opponent_references(ctx, start, start, [gen], settings, 0)
    generated = costs["tokens_generated"]
    pairs = load_from_disk(str(ref.path / "pairs"))
    packed = sum(packed_length(p) for p in pairs)
    sequences = read_json(ref.path / "stats.json")["tokens"]
    rows = [
        (
            "generation",
            costs["generation_s"],
            prompt_tokens + generated,
            2 * params * (prompt_tokens + generated),
        ),
        ("reference", costs["reference_s"], packed, 2 * params * packed),
        (
            "training",
            costs["train_s"],
            packed * settings.epochs,
            6 * params * packed * settings.epochs,
        ),
        ("evaluation", costs["eval_s"], None, None),
    ]
    print(
        f"params {params / 1e6:.1f} M; {len(pairs)} pairs; generated {generated} tokens; "
        f"pair tokens {sequences} as two sequences, {packed} packed"
    )
    print(f"{'stage':12s} {'wall s':>8s} {'tokens/s':>10s} {'GFLOP/s':>9s} {'of peak':>8s}")
    total = 0.0
    for name, seconds, tokens, flops in rows:
        total += seconds
        if tokens is None:
            print(f"{name:12s} {seconds:8.1f} {'-':>10s} {'-':>9s} {'-':>8s}")
            continue
        rate = flops / seconds
        print(
            f"{name:12s} {seconds:8.1f} {tokens / seconds:10.1f} {rate / 1e9:9.2f} "
            f"{rate / peak:8.1%}"
        )
    print(
        f"stages {total:.1f} s; whole iteration {chain_s:.1f} s wall (loading and saving "
        "models, writing artifacts included)"
    )
    print(f"load after: {common.load_average():.2f}")
    compute = sum(f for _, _, _, f in rows if f is not None)
    timed_compute = sum(s for _, s, _, f in rows if f is not None)
    print(
        f"RATIO iteration {chain_s:.1f} s wall; generation+reference+training at "
        f"{compute / timed_compute / peak:.1%} of the measured fp32 matmul peak"
    )


if __name__ == "__main__":
    main()
