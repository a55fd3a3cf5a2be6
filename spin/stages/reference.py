"""The reference log-probabilities of a set of pairs under a frozen model (the paper's
p_{theta_t}), computed once and stored with the encoded pairs training reads. Under several
processes each scores a run of whole batches and the main process gathers them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from datasets import Dataset
from omegaconf import DictConfig

from spin import distributed
from spin.artifacts import Artifact, write_json
from spin.errors import DataError
from spin.logprobs import reference_batches, reference_logps
from spin.lora import reference_spec
from spin.models import load_tokenizer
from spin.pairs import all_pairs, draw_pairs, read_pairs
from spin.stages.context import Context
from spin.stages.loading import ModelRef
from spin.stages.prompts import format_spec, formatter


def reference(
    ctx: Context,
    model: ModelRef,
    gens: list[Artifact],
    stage: str,
    draw_seed: int | None = None,
    score: bool = True,
    anchor: Artifact | None = None,
) -> Artifact:
    """Reference log-probabilities of ``model`` on the pairs of ``gens``: all of them, or
    with ``draw_seed`` one pair per prompt drawn from the sets (fictitious play).

    Without ``score`` (a reference-free loss) the pairs are encoded with ``model``'s
    tokenizer and no model scores them: an artifact of kind ``pairs`` whose reference
    columns hold zeros, which such a loss never reads, so training reads it like any
    other; its stats record no reference seconds (the report's reference time is None).
    With ``anchor`` (a generation set over the same prompts: iteration 0's, for a loss
    that reads it) each pair also carries that set's generation for its prompt, encoded
    as the ``anchor`` side."""
    cfg = ctx.cfg
    spec = {
        "model": model.key,
        "generations": [g.key for g in gens],
        **format_spec(cfg),
        "max_prompt_length": cfg.model.max_prompt_length,
        "max_length": cfg.model.max_length,
        "drop_identical": cfg.spin.drop_identical,
    }
    if score:
        spec |= {"precision": cfg.trainer.precision} | reference_spec(cfg)
    if draw_seed is not None:
        spec["draw_seed"] = draw_seed
    if anchor is not None:
        spec["anchor"] = anchor.key

    def build(work: Path) -> None:
        start = time.perf_counter()
        rows = draw_pairs(gens, draw_seed) if draw_seed is not None else all_pairs(gens)
        if anchor is not None:
            rows = with_anchors(rows, read_pairs(anchor))
        if not score:
            tokenizer = load_tokenizer(
                model.location, cfg.model.trust_remote_code, cfg.model.revision
            )
            examples, n_identical = encode_pairs(cfg, tokenizer, rows)
            scored = [0.0] * len(examples), [0.0] * len(examples)
        else:
            policy, tokenizer = ctx.models.load_reference(model)
            examples, n_identical = encode_pairs(cfg, tokenizer, rows)
            scored = score_pairs(cfg, policy, tokenizer, examples, stage, work / "chunks")
        if scored is None:
            return  # another process's part, gathered by the main process
        ref_real, ref_gen = scored
        for ex, r, g in zip(examples, ref_real, ref_gen, strict=True):
            ex["ref_real_logps"], ex["ref_generated_logps"] = r, g
        Dataset.from_list(examples).save_to_disk(work / "pairs")
        tokens = sum(len(e["real_input_ids"]) + len(e["generated_input_ids"]) for e in examples)
        seconds = time.perf_counter() - start
        write_json(
            work / "stats.json",
            {
                "n_pairs": len(examples),
                "n_identical": n_identical,
                "tokens": tokens,
                "seconds": seconds if score else None,
            },
        )
        shutil.rmtree(work / "chunks", ignore_errors=True)

    kind = "reference" if score else "pairs"
    return ctx.artifact(kind, spec, build, together=score)


def score_pairs(
    cfg: DictConfig,
    policy: Any,
    tokenizer: Any,
    examples: list[dict],
    stage: str,
    chunk_dir: Path,
) -> tuple[list[float], list[float]] | None:
    """Reference log-probabilities of ``examples`` (real, generated) in input order.
    Under several processes each scores a run of whole batches of the one-process
    pass, so the values are the same, and the main process gathers them; the others
    get None."""
    batch_size = cfg.trainer.ref_batch_size
    score = {
        "batch_size": batch_size,
        "pad_token_id": tokenizer.pad_token_id,
        "precision": cfg.trainer.precision,
    }
    desc = f"{stage}: reference"
    if distributed.world_size() == 1:
        return reference_logps(policy, examples, desc=desc, chunk_dir=chunk_dir, **score)
    batches = reference_batches(examples, batch_size)
    part = distributed.my_block(len(batches), 1)
    positions = [i for batch in batches[part.start : part.stop] for i in batch]
    real, generated = reference_logps(
        policy,
        [examples[i] for i in positions],
        desc=f"{desc} [{distributed.rank()}]",
        chunk_dir=chunk_dir / f"from-batch-{part.start}",
        **score,
    )
    parts = distributed.gather((positions, real, generated))
    if parts is None:
        return None
    by_position = {i: (r, g) for p in parts for i, r, g in zip(*p, strict=True)}
    ordered = [by_position[i] for i in range(len(examples))]
    return [r for r, _ in ordered], [g for _, g in ordered]


def with_anchors(rows: list[dict], anchors: list[dict]) -> list[dict]:
    """``rows`` (one or more pair sets over the same prompts, in order) each with the
    ``anchor`` generation of its prompt from ``anchors``, a set over those prompts."""
    out = []
    for i, row in enumerate(rows):
        anchor = anchors[i % len(anchors)]
        if anchor["prompt"] != row["prompt"]:
            raise ValueError(
                f"pair {i}: iteration 0's generations do not hold the same prompts in the "
                "same order as the pairs; the anchored loss needs one generation per prompt"
            )
        out.append(row | {"anchor": anchor["generated"]})
    return out


def encode_pairs(cfg: DictConfig, tokenizer: Any, rows: list[dict]) -> tuple[list[dict], int]:
    """The pairs as token ids and response masks in the training format, and how many were
    identical (dropped with ``spin.drop_identical``: they carry no gradient); a row with an
    ``anchor`` response (:func:`with_anchors`) also gets that side's ids and mask."""
    fmt = formatter(cfg, tokenizer)
    lengths = (cfg.model.max_prompt_length, cfg.model.max_length)
    examples, n_identical = [], 0
    for row in rows:
        n_identical += row["identical"]
        if row["identical"] and cfg.spin.drop_identical:
            continue
        sides = ["real", "generated", "anchor"] if "anchor" in row else ["real", "generated"]
        encoded = fmt.encode_pair(row["prompt"], [row[side] for side in sides], *lengths)
        example = {}
        for side, seq in zip(sides, encoded, strict=True):
            example[f"{side}_input_ids"] = seq["input_ids"]
            example[f"{side}_response_mask"] = seq["response_mask"]
        examples.append(example)
    fmt.report_cuts("pair", len(rows) * 2, cfg.model.max_length)
    if not examples:
        raise DataError(
            f"no training pairs left: all {len(rows)} generated responses equal the real "
            "ones and spin.drop_identical=true drops them; set spin.drop_identical=false or "
            "use sampling (generation=sampling)"
        )
    return examples, n_identical
