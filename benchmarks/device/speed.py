"""Speed parts of the device check: the project's training, generation and scoring against
their peers on the same device, same data, same batch, contenders interleaved.

Each reuses the CPU benchmark's contender (``bench_training``, ``bench_generation``,
``bench_scoring``) on models of the real architectures with random weights
(:mod:`shapes`); each figure is a ratio measured in the same run.

- training: pairs/s and peak GPU memory of SPINTrainer (its reference pass included)
  against TRL's DPOTrainer, default and with precomputed reference log-probabilities, in
  bfloat16 autocast over float32 master weights; MFU counts 8 * parameters * tokens of the
  pairs as two sequences (the policy's forward and backward, 6, and the reference forward,
  2, that every contender does), against the bf16 matrix-multiply peak measured in the run;
- generation: generated tokens/s of :class:`spin.generation.HFGenerator` against plain
  batched ``generate``;
- scoring: tokens through the model per second of the project's lm-eval model against
  lm-eval's own HF scoring, on the embedded tasks.
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
from dataclasses import replace

import bench_training
import common
import shapes
import torch
from part_context import Run, Skip

CONTENDERS = ("spin", "trl", "trl-precompute")
# Architecture, pairs, pairs per step, repeats per contender, contenders: where memory
# allows. At 7B, TRL's default keeps a second float32 model (28 GiB) beside the 87 GiB of
# weights, gradients and optimizer state, which leaves no room for activations on 141 GB.
TRAINING = {
    "train_360m": ("smollm2-360m", 64, 8, 2, CONTENDERS),
    "train_1.7b": ("smollm2-1.7b", 64, 8, 2, CONTENDERS),
    "train_7b": ("mistral-7b", 16, 4, 1, ("spin", "trl-precompute")),
}
TOY_TRAINING = (4, 2)  # pairs, pairs per step; one run per contender
PARITY = {"fp32": 1e-4, "bf16": 2e-2}  # |first loss difference| on the parity batch


def freed(device: torch.device) -> None:
    """Drop what the last contender left, and reset the peak, before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def matmul_peak(device: torch.device, toy: bool) -> float:
    """FLOP/s of a large matrix multiply in the dtype the runs compute in (bfloat16 on the
    GPU, float32 on the CPU), best of 10 after warming up."""
    if device.type == "cpu":
        return common.matmul_peak_flops(size=256 if toy else 2048, repeats=3)
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    best = float("inf")
    for i in range(13):
        torch.cuda.synchronize()
        started = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize()
        if i >= 3:
            best = min(best, time.perf_counter() - started)
    return 2 * 8192**3 / best


def medians(runs: dict[str, list[dict]], key: str) -> dict[str, float | None]:
    return {
        name: statistics.median(r[key] for r in rs) if rs[0][key] is not None else None
        for name, rs in runs.items()
    }


def training(run: Run) -> dict:
    """One training size: every contender ``repeats`` times, interleaved, each on a fresh
    model with the same seeded weights."""
    arch, n_pairs, batch, repeats, contenders = TRAINING[run.part]
    if run.toy:
        n_pairs, batch, repeats = *TOY_TRAINING, 1
    precision = "fp32" if run.toy else "bf16"
    tok = shapes.tokenizer(run.toy)
    triples = common.arith_pairs(n_pairs)
    pairs = common.encode_pairs(tok, triples, bench_training.MAX_LENGTH)
    tokens = sum(len(p["real_input_ids"]) + len(p["generated_input_ids"]) for p in pairs)
    peak = matmul_peak(run.device, run.toy)
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _, name in common.interleaved(contenders, repeats):
        freed(run.device)
        model = shapes.random_model(arch, tok, run.device, torch.float32, run.toy)
        params = shapes.parameters(model)
        if name == "spin":
            r = bench_training.spin_run(pairs, batch, tok.pad_token_id, model, tok, precision)
        else:
            precompute = name == "trl-precompute"
            reference = None if precompute else copy.deepcopy(model)  # no path to load from
            r = bench_training.trl_run(
                triples, batch, precompute, model, tok, precision, ref_model=reference
            )
            del reference
        r |= {
            "pairs_per_s": n_pairs / r["seconds"],
            "train_pairs_per_s": n_pairs / r["train_s"],
            "mfu": 8 * params * tokens / r["seconds"] / peak,
            "peak_gpu_gib": peak_gib(run.device),
        }
        runs[name].append(r)
        del model
    freed(run.device)
    speed = medians(runs, "pairs_per_s")
    memory = medians(runs, "peak_gpu_gib")
    gap = max(abs(r["parity"]["loss"] - runs["spin"][0]["parity"]["loss"]) for r in all_of(runs))
    figures = {
        "architecture": arch,
        "parameters": params,
        "pairs": n_pairs,
        "batch": batch,
        "tokens": tokens,
        "precision": precision,
        "repeats": repeats,
        "matmul_peak_tflops": peak / 1e12,
        "pairs_per_s": speed,
        "train_pairs_per_s": medians(runs, "train_pairs_per_s"),
        "mfu": medians(runs, "mfu"),
        "peak_gpu_gib": memory,
        "ratio_pairs_per_s": {p: speed["spin"] / speed[p] for p in contenders[1:]},
        "first_loss_gap": gap,
        "runs": {name: [strip(r) for r in rs] for name, rs in runs.items()},
    }
    if memory["spin"] is not None:
        figures["ratio_peak_memory"] = {p: memory["spin"] / memory[p] for p in contenders[1:]}
    ok = gap <= PARITY[precision]
    return {"ok": ok, "why": None if ok else f"first-step losses differ by {gap:.2e}", **figures}


def all_of(runs: dict[str, list[dict]]) -> list[dict]:
    return [r for rs in runs.values() for r in rs]


def strip(result: dict) -> dict:
    """A run's figures for the report, without the parity batch's detail."""
    return {k: v for k, v in result.items() if k != "parity"}


def train_360m(run: Run) -> dict:
    return training(run)


def train_1_7b(run: Run) -> dict:
    return training(run)


def train_7b(run: Run) -> dict:
    if torch.cuda.get_device_properties(0).total_memory < 120 * 2**30:
        raise Skip("a 7B model's float32 weights, gradients and RMSprop state need ~90 GiB")
    return training(run)


def generation(run: Run) -> dict:
    """HFGenerator (length-sorted batches) against ``generate`` on batches in input order,
    SmolLM2-360M's shape in bfloat16 (toy: float32), greedy, interleaved over repeats."""
    from bench_generation import plain_generate

    from spin.config import GenerationConfig
    from spin.data import PromptFormatter
    from spin.generation import HFGenerator

    n, batch, new = (4, 2, 8) if run.toy else (64, 32, 128)
    tok = shapes.tokenizer(run.toy)
    dtype = torch.float32 if run.toy else torch.bfloat16
    model = shapes.random_model("smollm2-360m", tok, run.device, dtype, run.toy)
    fmt = PromptFormatter(tok, "chat")
    prompts = [fmt.prompt_text(t["prompt"]) for t in common.arith_pairs(n)]
    cfg = replace(GenerationConfig(), max_new_tokens=new, batch_size=batch, shard_size=n)
    generator = HFGenerator(model, tok, cfg)
    in_order = [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]
    contenders = {
        "spin": lambda: (generator.generate(prompts), generator.last_stats["generated_tokens"]),
        "hf-generate": lambda: plain_generate(model, tok, cfg, in_order, prompts),
    }
    plain_generate(model, tok, replace(cfg, max_new_tokens=4), in_order[:1], prompts)  # warm-up
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _, name in common.interleaved(list(contenders), repeats(run)):
        synchronize(run.device)
        started = time.perf_counter()
        texts, tokens = contenders[name]()
        synchronize(run.device)
        seconds = time.perf_counter() - started
        runs[name].append({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds})
        runs[name][-1]["texts"] = texts
    speed = medians(runs, "tokens_per_s")
    ours, theirs = (runs[name][0].pop("texts") for name in contenders)
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    for r in all_of(runs):
        r.pop("texts", None)
    return {
        "ok": True,
        "prompts": n,
        "batch": batch,
        "max_new_tokens": new,
        "tokens_per_s": speed,
        "ratio_tokens_per_s": speed["spin"] / speed["hf-generate"],
        "identical_completions": f"{same} of {n}",
        "runs": runs,
    }


def repeats(run: Run) -> int:
    """Runs per contender: 2 (interleaved), or 1 at toy size, where only the code counts."""
    return 1 if run.toy else 2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def scoring(run: Run) -> dict:
    """The project's lm-eval model against lm-eval's own HF scoring on the embedded tasks
    (``bench_scoring``'s contenders), SmolLM2-360M's shape in bfloat16 (toy: float32):
    tokens fed to the model per second, interleaved over repeats."""
    import bench_scoring

    from evaluation import plan_tasks

    limit = ["eval.limit=2", "eval.max_new_tokens=8"] if run.toy else ["eval.limit=32"]
    cfg = bench_scoring.config(run.work, limit)
    plans = plan_tasks(cfg.eval)
    tok = shapes.tokenizer(run.toy)
    dtype = torch.float32 if run.toy else torch.bfloat16
    model = shapes.random_model("smollm2-360m", tok, run.device, dtype, run.toy)
    counter = TokenCounter(model)
    runs: dict[str, list[dict]] = {name: [] for name in bench_scoring.CONTENDERS}
    for _, name in common.interleaved(list(bench_scoring.CONTENDERS), repeats(run)):
        counter.tokens = 0
        r = bench_scoring.score_once(name, plans, model, tok, cfg)
        r |= {"tokens": counter.tokens, "tokens_per_s": counter.tokens / r["seconds"]}
        runs[name].append(r)
    speed = medians(runs, "tokens_per_s")
    seconds = medians(runs, "seconds")
    return {
        "ok": True,
        "tasks": [p.name for p in plans],
        "limit": cfg.eval.limit,
        "tokens_per_s": speed,
        "seconds": seconds,
        "ratio_time_project_to_hflm": seconds["project"] / seconds["hflm"],
        "runs": {name: [strip_scores(r) for r in rs] for name, rs in runs.items()},
    }


class TokenCounter:
    """Counts the token positions fed to a model's forward calls (padding included), so
    that tokens/s means the same whichever code calls the model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.tokens = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is not None:
            self.tokens += ids.numel()


def strip_scores(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "scores"}
