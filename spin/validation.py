"""Checks of a composed config that its schema's types cannot make (:mod:`spin.config`):
allowed names, positive numbers, settings that only make sense together. Each failure is a
:class:`~spin.errors.ConfigError` naming the key and what is allowed, raised before any
work. What the machine must have for the settings (a backend's package, a GPU) is checked
where a job starts (:func:`spin.job.require_environment`).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from spin.config import (
    Config,
    IterationOverride,
    check_keys,
    check_name,
    given_pairs_config,
    iteration_settings,
)
from spin.errors import ConfigError

ALLOWED = {
    "model.source": ("tiny", "gguf", "hub"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.prompt_overflow": ("truncate", "reject"),
    "model.truncation": ("prompt", "pair"),
    "data.source": ("arith", "jsonl", "hf", "ultrachat"),
    "data.selection": ("first", "random"),
    "generation.backend": ("hf", "vllm"),
    "trainer.optimizer": ("rmsprop", "adamw"),
    "trainer.precision": ("fp32", "bf16", "fp16"),
    "trainer.distributed": ("none", "ddp", "fsdp", "zero3"),
    "logger.name": ("wandb", "none"),
    "logger.mode": ("offline", "online", "disabled"),
    "baseline.name": ("none", "sft", "sft_more", "dpo", "spin_dpo"),
    "baseline.preferences.source": ("arith", "ultrafeedback", "jsonl"),
    "opponent.name": ("previous", "fictitious", "kl_mixture"),
    "lora.quantize": (None, "4bit"),
}

POSITIVE = (
    "loss.beta",
    "loss.alpha",
    "trainer.lr",
    "trainer.epochs",
    "trainer.batch_size",
    "trainer.grad_accumulation",
    "trainer.ref_batch_size",
    "generation.max_new_tokens",
    "generation.batch_size",
    "generation.shard_size",
    "generation.temperature",
    "model.max_prompt_length",
    "model.max_length",
    "eval.batch_size",
    "trainer.world_size",
    "sft.epochs",
    "sft.lr",
    "sft.batch_size",
    "baseline.epochs",
    "baseline.beta",
    "lora.r",
    "lora.alpha",
)


def validate(cfg: DictConfig) -> None:
    """Reject values the schema's types cannot rule out, naming the key and what is allowed.

    Only the settings are checked here; what the machine must have for them (a backend's
    package, QLoRA's GPU, the launch) is checked where a job starts, before any work
    (:func:`spin.job.require_environment`), so a dry run plans for hardware it is not on."""
    from spin.losses import LOSSES

    check_keys(cfg, Config)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"required value(s) missing: {', '.join(missing)}; set them on the command line, "
            f"e.g. {missing[0]}=..."
        )
    for key, override in cfg.schedule.items():
        if not str(key).isdigit():
            raise ConfigError(f"schedule.{key}: keys are iteration numbers (0, 1, ...)")
        check_keys(override, IterationOverride, f"schedule.{key}.")
        for name in ("lr", "beta", "epochs", "alpha"):
            value = override.get(name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(f"schedule.{key}.{name}={value!r} must be a positive number")

    allowed = {
        **ALLOWED,
        "loss.name": tuple(sorted(LOSSES)),
        "baseline.loss": tuple(sorted(LOSSES)),
    }
    for key, options in allowed.items():
        value = OmegaConf.select(cfg, key)
        if value not in options:
            raise ConfigError(f"{key}={value!r} is not allowed; expected one of {list(options)}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is None or value <= 0:
            raise ConfigError(f"{key}={value!r} must be a positive number")
    if cfg.data.source in ("jsonl", "hf", "ultrachat") and not cfg.data.path:
        raise ConfigError(
            f"data.path is required for data.source={cfg.data.source!r}: "
            "set data.path=FILE (or a hub id for hf/ultrachat)"
        )
    check_name(cfg.name, "name")
    for task, settings in cfg.eval.settings.items():
        if settings.get("path") is not None:
            check_name(task, f"eval.settings.{task} (a user set's name)")
    if cfg.iter < 0:
        raise ConfigError(f"iter={cfg.iter} must be >= 0 (iterations count from 0)")
    if cfg.trainer.save_steps < 0:
        raise ConfigError(f"trainer.save_steps={cfg.trainer.save_steps} must be >= 0 (0: auto)")
    if cfg.model.max_prompt_length >= cfg.model.max_length:
        raise ConfigError(
            f"model.max_prompt_length={cfg.model.max_prompt_length} must be smaller than "
            f"model.max_length={cfg.model.max_length}"
        )
    for key in ("prompt_format", "train_prompt_format"):
        fmt = cfg.generation[key]
        if fmt is not None and fmt != "chat" and "{prompt}" not in fmt:
            raise ConfigError(
                f"generation.{key}={fmt!r} must be 'chat' or a template containing '{{prompt}}'"
            )
    _validate_comparisons(cfg)
    _validate_given_pairs(cfg)
    _validate_lora(cfg)


def _validate_given_pairs(cfg: DictConfig) -> None:
    """Each ``spin.given_pairs`` entry: an iteration number naming a data set and its fields
    (entries past ``iter`` are allowed and unused, so one setting serves a sweep over iter)."""
    for key in cfg.spin.given_pairs:
        prefix = f"spin.given_pairs.{key}"
        if not str(key).isdigit():
            raise ConfigError(f"{prefix}: keys are iteration numbers (0, 1, ...)")
        given = given_pairs_config(cfg, int(key))
        if not given.path:
            raise ConfigError(
                f"{prefix}.path is required: a hub id (e.g. UCLA-AGI/SPIN_iter0), a local "
                ".jsonl/.json/.parquet file or a directory in the hub layout"
            )
        for name in ("split", "real_field", "generated_field"):
            if not given[name]:
                raise ConfigError(f"{prefix}.{name} is empty; expected a split or column name")
        if given.n is not None and given.n < 1:
            raise ConfigError(
                f"{prefix}.n={given.n}: expected a positive number of pairs, or null for all"
            )


def _validate_lora(cfg: DictConfig) -> None:
    """LoRA settings peft would reject late (QLoRA's hardware is checked where a job starts,
    :func:`spin.job.require_environment`)."""
    lora = cfg.lora
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"lora.dropout={lora.dropout} must be in [0, 1)")
    if not lora.target_modules:
        raise ConfigError("lora.target_modules is empty; name the modules to adapt, or all-linear")
    if lora.quantize is not None and not lora.enabled:
        raise ConfigError(
            f"lora.quantize={lora.quantize!r} quantizes the base of LoRA adapters: set "
            "lora.enabled=true too (lora=qlora sets both)"
        )


def _validate_comparisons(cfg: DictConfig) -> None:
    """Baseline and opponent settings that only make sense together."""
    weight = cfg.opponent.mixture_weight
    if not 0 <= weight <= 1:
        raise ConfigError(f"opponent.mixture_weight={weight} must be in [0, 1]")
    if cfg.opponent.name == "fictitious":
        mixing = [t for t in range(cfg.iter + 1) if iteration_settings(cfg, t).mix_previous]
        if mixing:
            raise ConfigError(
                "opponent=fictitious draws each prompt's opponent from all earlier iterates, "
                f"which replaces t-1 mixing: set spin.mix_previous=false (mixing is on for "
                f"iteration(s) {mixing})"
            )
    prefs = cfg.baseline.preferences
    if cfg.baseline.name in ("dpo", "spin_dpo") and prefs.source == "jsonl" and not prefs.path:
        raise ConfigError(
            "baseline.preferences.path is required for baseline.preferences.source='jsonl': "
            "a JSONL file of prompt, chosen and rejected fields"
        )
    if cfg.sft.n_train is not None and cfg.sft.n_train <= 0:
        raise ConfigError(f"sft.n_train={cfg.sft.n_train} must be a positive number or null")
