"""The generation stage against per-prompt, unsorted batched and continuous-batching generation.

Contenders, on the same prompts (the arithmetic training prompts, chat-formatted as the
pipeline formats them), the same SmolLM2-135M in float32 and greedy decoding:

- ``spin``: :class:`spin.generation.HFGenerator` (left-padded batches of similar prompt
  length, longest first);
- ``per-prompt``: ``model.generate`` on one prompt at a time;
- ``batched-unsorted``: the same batch size, prompts batched in input order;
- ``continuous``: transformers' continuous batching (``model.generate_batch``), which
  schedules its own batches.

Generated tokens per second count each row's tokens up to and including its end-of-turn
token. The greedy completions of all four must be identical (asserted).

    python benchmarks/bench_generation.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

# The benchmarks' helpers and the repository's packages, whichever directory runs this.
# ruff: noqa: E402  (the imports below need the path above)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common

from spin.config import GenerationConfig
from spin.data import PromptFormatter
from spin.generation import HFGenerator, count_generated, encode_prompts
from spin.models import load_model

MODES = {
    "quick": {"prompts": 16, "batch": 8, "max_new_tokens": 64},
    "full": {"prompts": 32, "batch": 16, "max_new_tokens": 128},
}


def plain_generate(model, tokenizer, cfg: GenerationConfig, batches: list[list[int]], prompts):
    """``model.generate`` on the given batches of prompt positions, nothing else."""
    texts: list[str] = [""] * len(prompts)
    tokens = 0
    kwargs = HFGenerator(model, tokenizer, cfg)._decoding_kwargs()
    model.eval()
    for batch in batches:
        encoded = tokenizer(
            [prompts[i] for i in batch],
            add_special_tokens=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        ).to(model.device)
        with torch.inference_mode():
            output = model.generate(**encoded, **kwargs, max_new_tokens=cfg.max_new_tokens)
        new = output[:, encoded["input_ids"].shape[1] :]
        tokens += count_generated(new, tokenizer.eos_token_id)
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, text in zip(batch, decoded, strict=True):
            texts[i] = text.strip()
    return texts, tokens


def continuous_batching(model, tokenizer, cfg: GenerationConfig, prompts: list[str]):
    """Transformers' own continuous batching (``generate_batch``), which drops finished
    requests from the running batch: the library's answer to rows idling until the longest
    one ends."""
    ids = encode_prompts(tokenizer, prompts)
    generator = HFGenerator(model, tokenizer, cfg)  # its decoding settings and decoding
    config = transformers.GenerationConfig(
        **generator._decoding_kwargs(), max_new_tokens=cfg.max_new_tokens
    )
    model.eval()
    outputs = model.generate_batch(ids, generation_config=config)
    rows = [torch.tensor([out.generated_tokens]) for out in outputs.values()]  # input order
    tokens = sum(count_generated(row, tokenizer.eos_token_id) for row in rows)
    return [generator._decode(row[0]) for row in rows], tokens


def timed(fn) -> tuple[list[str], int, float]:
    started = time.perf_counter()
    texts, tokens = fn()
    return texts, tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of ~10")
    mode = "quick" if parser.parse_args().quick else "full"
    settings = MODES[mode]
    model, tokenizer = load_model(common.model_dir())
    load = common.wait_for_quiet()
    print(f"machine: {common.machine()}")
    print(f"mode: {mode} {settings}; load {load:.2f}")
    fmt = PromptFormatter(tokenizer, "chat")
    prompts = [fmt.prompt_text(t["prompt"]) for t in common.arith_pairs(settings["prompts"])]
    cfg = replace(
        GenerationConfig(),
        max_new_tokens=settings["max_new_tokens"],
        batch_size=settings["batch"],
        shard_size=len(prompts),
    )
    generator = HFGenerator(model, tokenizer, cfg)
    n, b = len(prompts), settings["batch"]
    singles = [[i] for i in range(n)]
    in_order = [list(range(s, min(s + b, n))) for s in range(0, n, b)]
    contenders = {
        "spin": lambda: (generator.generate(prompts), generator.last_stats["generated_tokens"]),
        "per-prompt": lambda: plain_generate(model, tokenizer, cfg, singles, prompts),
        "batched-unsorted": lambda: plain_generate(model, tokenizer, cfg, in_order, prompts),
        "continuous": lambda: continuous_batching(model, tokenizer, cfg, prompts),
    }
    # One short untimed batch first, so that no contender pays the one-time start-up
    # (thread pool, allocator, kernel selection) for the others.
    plain_generate(model, tokenizer, replace(cfg, max_new_tokens=4), in_order[:1], prompts)
    results = {}
    for name, fn in contenders.items():
        before = common.load_average()
        texts, tokens, seconds = timed(fn)
        results[name] = {"texts": texts, "tokens": tokens, "seconds": seconds}
        print(
            f"{name:17s} (load {before:.2f}) {tokens / seconds:7.2f} generated tokens/s  "
            f"{tokens:6d} tokens  {seconds:7.1f} s",
            flush=True,
        )
    print(f"load after: {common.load_average():.2f}")
    peers = [name for name in contenders if name != "spin"]
    for name in peers:
        ours, theirs = results["spin"]["texts"], results[name]["texts"]
        differing = [i for i in range(n) if ours[i] != theirs[i]]
        assert not differing, f"greedy outputs differ from {name} at prompts {differing}"
    print(f"greedy outputs identical across all {len(contenders)}: True")
    speed = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    ratios = ", ".join(f"SPIN/{name} {speed['spin'] / speed[name]:.2f}x" for name in peers)
    print(f"RATIO generation tokens/s {ratios}")


if __name__ == "__main__":
    main()
