"""The model iteration 0 starts from: the configured model, materialised as an artifact
unless it is a hub model, or with ``sft.enabled`` its supervised fine-tuning on the data's
train split (the stage continued SFT, spin/baselines.py, reuses)."""

from __future__ import annotations

import logging
from pathlib import Path

from spin.artifacts import Artifact, spec_key
from spin.data import fingerprint
from spin.models import materialize_start_model
from spin.sft import encode_sft, train_sft
from spin.stages.context import Context, section
from spin.stages.loading import ModelRef
from spin.stages.prompts import check_prompts, format_spec, formatter
from spin.stages.training import (
    arguments,
    finish_training,
    resume_point,
    trainer_key,
    trainer_saves,
    trainer_settings,
    weights_spec,
)

log = logging.getLogger(__name__)


def base_model(ctx: Context) -> ModelRef:
    """The configured start model, keyed by the settings that pick its weights; the hub
    revision only when set, so the keys of runs made before it existed stay valid."""
    cfg = ctx.cfg.model
    spec = section(
        ctx.cfg,
        "model",
        drop=("max_prompt_length", "prompt_overflow", "truncation", "max_length", "n_params"),
    )
    for key in ("revision", "shape"):  # added later: in the key only when set
        if cfg[key] is None:
            del spec["model"][key]
    if cfg.source == "hub":
        return ModelRef(spec_key(spec), cfg.path or cfg.name)
    artifact = ctx.artifact("model", spec, lambda work: materialize_start_model(cfg, work))
    return ModelRef(artifact.key, str(artifact.path))


def start_model(ctx: Context) -> tuple[ModelRef, Artifact | None]:
    """The model iteration 0 starts from: the configured one, or its SFT on the data's
    train split when ``sft.enabled`` (then also the SFT artifact, for its costs)."""
    base = base_model(ctx)
    ctx.long_prompts(base)
    if not ctx.cfg.sft.enabled:
        return base, None
    records = ctx.sft_records
    check_prompts(ctx.cfg, base, [r["prompt"] for r in records], "sft data")
    return sft(ctx, base, records, ctx.cfg.sft.epochs, ctx.cfg.sft.lr, "sft")


def sft(
    ctx: Context,
    parent: ModelRef,
    records: list[dict],
    epochs: float,
    lr: float,
    stage: str,
    seed: int | None = None,
) -> tuple[ModelRef, Artifact]:
    """Supervised fine-tuning of ``parent`` on the real responses of ``records``, with
    ``trainer.seed`` unless ``seed`` is given (a baseline: moved by the run's seed)."""
    cfg = ctx.cfg
    seed = cfg.trainer.seed if seed is None else seed
    trainer = trainer_settings(
        cfg, lr, epochs, batch_size=cfg.sft.batch_size, optimizer="adamw", seed=seed
    )
    spec = {
        "parent": parent.key,
        "sft_data": fingerprint(records),
        **format_spec(cfg),
        "max_prompt_length": cfg.model.max_prompt_length,
        "max_length": cfg.model.max_length,
        "trainer": trainer_key(trainer),
    } | weights_spec(cfg)

    def build(work: Path) -> None:
        args = arguments(cfg, work, trainer)
        policy, tokenizer = ctx.models.load_private(parent, seed)
        lengths = (cfg.model.max_prompt_length, cfg.model.max_length)
        dataset = encode_sft(formatter(cfg, tokenizer), records, *lengths)
        log.info("%s: supervised fine-tuning on %d records", stage, len(records))
        history = train_sft(
            policy,
            tokenizer,
            dataset,
            args,
            resume_from=resume_point(work),
            save_to=trainer_saves(cfg, work),
        )
        tokens = sum(len(ids) for ids in dataset["input_ids"])
        finish_training(cfg, work, policy, tokenizer, parent, history, tokens * epochs)

    artifact = ctx.artifact("model", spec, build, together=True)
    return ModelRef(artifact.key, str(artifact.path / "model")), artifact
