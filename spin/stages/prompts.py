"""How the stages format prompts: one setting for generation and training unless
``generation.train_prompt_format`` sets training's apart, and the prompt-length check every
set of prompts passes before a stage uses it."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from spin.data import PromptFormatter
from spin.models import load_tokenizer
from spin.stages.loading import ModelRef


def formatter(cfg: DictConfig, tokenizer: Any, training: bool = True) -> PromptFormatter:
    """The prompt format of training, or with ``training=False`` of generation: one and
    the same unless ``generation.train_prompt_format`` sets training's apart."""
    gen = cfg.generation
    fmt = gen.train_prompt_format if training and gen.train_prompt_format else None
    return PromptFormatter(
        tokenizer, fmt or gen.prompt_format, gen.system_prompt, cfg.model.truncation
    )


def format_spec(cfg: DictConfig) -> dict[str, Any]:
    """What a training-side artifact's key holds of the formatting: the prompt format, and
    the system turn and truncation rule only when set, so earlier keys stay valid."""
    gen = cfg.generation
    spec: dict[str, Any] = {"prompt_format": gen.train_prompt_format or gen.prompt_format}
    if gen.system_prompt is not None:
        spec["system_prompt"] = gen.system_prompt
    if cfg.model.truncation != "prompt":
        spec["truncation"] = cfg.model.truncation
    return spec


def check_prompts(cfg: DictConfig, model: ModelRef, prompts: list[str], source: str) -> int:
    """Prompts of ``source`` over ``model.max_prompt_length`` tokens in the generation or
    the training format, counted (or, with ``model.prompt_overflow=reject``, refused) with
    only the tokenizer loaded, before the stages that use them; every model of a chain
    shares its start model's tokenizer. Under ``model.truncation=pair`` no prompt is cut
    up front (training cuts per pair), so none is counted."""
    model_cfg = cfg.model
    if model_cfg.truncation == "pair":
        return 0
    tokenizer = load_tokenizer(model.location, model_cfg.trust_remote_code, model_cfg.revision)
    sides = [True] if cfg.generation.train_prompt_format is None else [True, False]
    return max(
        formatter(cfg, tokenizer, training).check_lengths(
            prompts, model_cfg.max_prompt_length, model_cfg.prompt_overflow, source
        )
        for training in sides
    )
