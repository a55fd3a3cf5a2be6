"""An iteration's pairs (prompt, real, generated): the start model M_t answers every train
prompt, or ``spin.given_pairs.<t>`` names a data set of pairs to take instead. Under several
processes each generates a block of whole shards and the main process gathers them."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin import distributed
from spin.artifacts import Artifact
from spin.data import fingerprint
from spin.generation import make_generator
from spin.pairs import write_pairs
from spin.stages.context import Context, section
from spin.stages.loading import ModelRef
from spin.stages.prompts import check_prompts, formatter

log = logging.getLogger(__name__)


def generate(ctx: Context, model: ModelRef, t: int) -> Artifact:
    """Iteration ``t``'s pairs: ``model`` (M_t) answers every train prompt, unless
    ``spin.given_pairs.<t>`` names a data set of pairs to take instead."""
    if t in ctx.given:
        return given_pairs(ctx, model, t)
    cfg = sampling_seeded(ctx)
    spec = {
        "model": model.key,
        "train": ctx.splits.train_fingerprint,
        **section(cfg, "generation", drop=("batch_size", "train_prompt_format")),
    }
    if spec["generation"]["system_prompt"] is None:
        del spec["generation"]["system_prompt"]
    # The cut changes what cut prompts are answered; prompts that fit keep the old key.
    max_prompt_length = cfg.model.max_prompt_length
    if ctx.long_prompts(model):
        spec["max_prompt_length"] = max_prompt_length

    def build(work: Path) -> None:
        policy, tokenizer = ctx.models.load_generator(model)
        fmt = formatter(cfg, tokenizer, training=False)
        records = ctx.splits.train
        completions, stats = complete(
            cfg,
            policy,
            tokenizer,
            [fmt.prompt_text(r["prompt"]) for r in records],
            [fmt.prompt_ids(r["prompt"], max_prompt_length) for r in records],
            work / "shards",
            f"iter {t}: generate",
        )
        if completions is None:
            return  # another process's part, gathered by the main process
        rows = [
            {"prompt": r["prompt"], "real": r["response"], "generated": c}
            for r, c in zip(records, completions, strict=True)
        ]
        write_pairs(work, rows, stats)
        if stats["reused_shards"]:
            log.info("iter %d: reused %d shards", t, stats["reused_shards"])
        shutil.rmtree(work / "shards")

    return ctx.artifact("generations", spec, build, together=True)


def sampling_seeded(ctx: Context) -> DictConfig:
    """The job's config with ``generation.seed`` moved by the run's ``seed`` when
    generation samples; greedy generations do not depend on it, so the seeds of one
    setting share them."""
    if not ctx.cfg.generation.do_sample or ctx.cfg.seed == 0:
        return ctx.cfg
    return OmegaConf.merge(ctx.cfg, {"generation": {"seed": ctx.seeded(ctx.cfg.generation.seed)}})


def given_pairs(ctx: Context, model: ModelRef, t: int) -> Artifact:
    """Iteration ``t``'s pairs read from a data set (e.g. the authors' released
    SPIN_iter0) in the generations' layout, so t-1 mixing, the reference pass and
    training take them as generated pairs. Keyed by their content alone: no model made
    them, and generation settings do not touch them. ``model`` (M_t, whose tokenizer
    every model of the chain shares) checks their prompts' lengths."""
    pairs, source = ctx.given[t]
    check_prompts(ctx.cfg, model, [p["prompt"] for p in pairs], f"spin.given_pairs.{t}")

    def build(work: Path) -> None:
        stats = {"generated_tokens": None, "seconds": None, "tokens_per_second": None}
        write_pairs(work, [dict(p) for p in pairs], stats | {"source": source})

    return ctx.artifact("given_pairs", {"given_pairs": fingerprint(pairs)}, build)


def complete(
    cfg: DictConfig,
    policy: Any,
    tokenizer: Any,
    texts: list[str],
    prompt_ids: list[list[int]],
    shard_dir: Path,
    desc: str,
) -> tuple[list[str] | None, dict[str, Any]]:
    """Completions of ``texts`` in input order and the generation statistics. Under
    several processes each generates a block of whole shards (into its own shard
    directory, so a rerun on as many processes resumes it) and the main process gathers
    the blocks; the others get None."""
    gen = cfg.generation
    backend = {
        "dtype": cfg.model.dtype,
        "trust_remote_code": cfg.model.trust_remote_code,
        "revision": cfg.model.revision,
    }
    if distributed.world_size() == 1:
        generator = make_generator(policy, tokenizer, gen, **backend)
        completions = generator.generate(
            texts, shard_dir=shard_dir, desc=desc, prompt_ids=prompt_ids
        )
        return completions, dict(generator.last_stats)
    start = time.perf_counter()
    part = distributed.my_block(len(texts), gen.shard_size)
    mine: list[str] = []
    tokens = reused = 0
    if part:
        # Backends seed each shard from generation.seed and its place in the call: the
        # offset by the block's first shard keeps every shard of the job on its own
        # random stream (for the HF backend, the one it has on one process).
        first_shard = part.start // gen.shard_size
        block_cfg = OmegaConf.merge(gen, {"seed": gen.seed + first_shard})
        generator = make_generator(policy, tokenizer, block_cfg, **backend)
        mine = generator.generate(
            texts[part.start : part.stop],
            shard_dir=shard_dir / f"from-{part.start}",
            desc=f"{desc} [{distributed.rank()}]",
            prompt_ids=prompt_ids[part.start : part.stop],
        )
        tokens = generator.last_stats["generated_tokens"]
        reused = generator.last_stats["reused_shards"]
    parts = distributed.gather((mine, tokens, reused))
    if parts is None:
        return None, {}
    seconds = time.perf_counter() - start
    tokens = sum(p[1] for p in parts)
    stats = {
        "generated_tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "reused_shards": sum(p[2] for p in parts),
    }
    return [c for p in parts for c in p[0]], stats
