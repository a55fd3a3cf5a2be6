"""Measurements behind the levers docs/performance.md weighs and leaves unused.

- Decoding: one batch of 16 chat-formatted prompts, SmolLM2-135M in float32, greedy. The
  prefill alone, then the time per decoding step and the share of it spent in ``aten::mm``
  (``torch.profiler``). Then matrix-multiply speed by number of rows for the model's layer
  (576 x 1536) and vocabulary-head (576 x 49152) shapes: decoding multiplies a few rows at a
  time, the benchmarks' peak is 2048 rows.
- ``torch.compile`` on one training step: forward and backward of
  :func:`spin.logprobs.pair_logps` on 8 packed pairs, eager against compiled with static
  shapes, best of 3 each, the compile time apart.

    python benchmarks/bench_levers.py [--quick]   # --quick skips torch.compile (~3 min)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import profile

# The benchmarks' helpers and the repository's packages, whichever directory runs this.
# ruff: noqa: E402  (the imports below need the path above)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common

from spin.data import PromptFormatter
from spin.generation import encode_prompts
from spin.logprobs import pack_pairs, pair_logps
from spin.models import load_model

DECODE_BATCH = 16
DECODE_STEPS = 16
ROWS = (1, 16, 32, 64, 256, 1024)
SHAPES = {"layer": (576, 1536), "head": (576, 49152)}


def decoding(model, tokenizer) -> None:
    fmt = PromptFormatter(tokenizer, "chat")
    prompts = [fmt.prompt_text(t["prompt"]) for t in common.arith_pairs(DECODE_BATCH)]
    batch = tokenizer.pad(
        {"input_ids": encode_prompts(tokenizer, prompts)}, padding_side="left", return_tensors="pt"
    )
    kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}

    def generate(steps: int) -> None:
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=steps, min_new_tokens=steps, **kwargs)

    prefill = common.best_of(lambda: generate(1), 1)
    steps = common.best_of(lambda: generate(DECODE_STEPS + 1), 1)
    per_step = (steps - prefill) / DECODE_STEPS
    with profile() as prof:
        generate(DECODE_STEPS + 1)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm")
    print(
        f"decoding, batch {DECODE_BATCH}: prefill {prefill:.2f} s; {per_step:.3f} s per step; "
        f"aten::mm {mm / total:.0%} of the profiled CPU time"
    )
    for name, (k, n) in SHAPES.items():
        weight = torch.randn(n, k)
        rates = []
        for rows in ROWS:
            x = torch.randn(rows, k)
            seconds = common.best_of(lambda x=x, weight=weight: F.linear(x, weight), 20)
            rates.append(f"{rows}: {2 * rows * k * n / seconds / 1e9:.0f}")
        print(f"F.linear GFLOP/s by rows, {name} {k}x{n}: " + ", ".join(rates))


def compiled_step(model, tokenizer) -> None:
    pairs = common.encode_pairs(tokenizer, common.arith_pairs(8), 512)
    batch = pack_pairs(pairs, tokenizer.pad_token_id)
    model.train()

    def step(module) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        logps = pair_logps(module, batch)
        logps.sum().backward()
        return logps.detach()

    eager_s = common.best_of(lambda: step(model), 3)
    eager = step(model)
    compiled_model = torch.compile(model, dynamic=False)
    started = time.perf_counter()
    step(compiled_model)
    compile_s = time.perf_counter() - started
    compiled_s = common.best_of(lambda: step(compiled_model), 3)
    difference = (step(compiled_model) - eager).abs().max().item()
    print(
        f"training step, {len(pairs)} pairs packed to {tuple(batch['input_ids'].shape)}: "
        f"eager {eager_s:.2f} s, compiled {compiled_s:.2f} s after {compile_s:.0f} s of "
        f"compiling; max |log-probability difference| {difference:.1e}"
    )
    print(f"RATIO torch.compile training step eager/compiled {eager_s / compiled_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip torch.compile (minutes)")
    quick = parser.parse_args().quick
    model, tokenizer = load_model(common.model_dir())
    load = common.wait_for_quiet()
    print(f"machine: {common.machine()}")
    print(f"load {load:.2f}")
    model.eval()
    decoding(model, tokenizer)
    if not quick:
        compiled_step(model, tokenizer)
    print(f"load after: {common.load_average():.2f}")


if __name__ == "__main__":
    main()
