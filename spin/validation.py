"""Checks of a composed config that its schema's types cannot make (:mod:`spin.config`):
allowed names (their lists live in :mod:`spin.names`), every number finite and in its range
(:data:`RANGES`), settings that only make sense together. Each failure is a
:class:`~spin.errors.ConfigError` naming the key and what is allowed, raised before any
work. What the machine must have for the settings (a backend's package, a GPU) is checked
where a job starts (:func:`spin.job.require_environment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin import names
from spin.config import (
    Config,
    IterationOverride,
    check_keys,
    check_name,
    enumerable_responses,
    given_pairs_config,
    iteration_settings,
)
from spin.errors import ConfigError

ALLOWED = {
    "model.source": names.MODEL_SOURCES,
    "model.dtype": names.DTYPES,
    "model.prompt_overflow": ("truncate", "reject"),
    "model.truncation": ("prompt", "pair"),
    "data.source": names.DATA_SOURCES,
    "data.selection": ("first", "random"),
    "generation.backend": names.BACKENDS,
    "trainer.optimizer": tuple(names.OPTIMIZERS),
    "trainer.precision": names.PRECISIONS,
    "trainer.distributed": names.LAUNCHES,
    "logger.name": names.LOGGERS,
    "logger.mode": names.LOGGER_MODES,
    "baseline.name": names.BASELINES,
    "baseline.loss": names.LOSSES,
    "baseline.preferences.source": names.PREFERENCE_SOURCES,
    "loss.name": (*names.LOSSES, *names.LOSS_ALIASES),
    "opponent.name": names.OPPONENTS,
    "lora.quantize": names.QUANTIZATIONS,
}


@dataclass(frozen=True)
class Range:
    """Where a number may lie: above ``low`` (or at it, when ``closed_low``), below
    ``high`` (or at it, ``closed_high``); ``null`` when None is allowed too."""

    low: float = -math.inf
    high: float = math.inf
    closed_low: bool = True
    closed_high: bool = True
    null: str | None = None

    def holds(self, value: float) -> bool:
        above = value >= self.low if self.closed_low else value > self.low
        below = value <= self.high if self.closed_high else value < self.high
        return above and below

    def describe(self) -> str:
        low = f"{'>=' if self.closed_low else '>'} {self.low:g}"
        high = f"{'<=' if self.closed_high else '<'} {self.high:g}"
        bounds = [b for b, end in ((low, self.low), (high, self.high)) if math.isfinite(end)]
        text = f"a finite number {' and '.join(bounds)}" if bounds else "a finite number"
        return f"{text}, or null ({self.null})" if self.null else text


POSITIVE = Range(0, closed_low=False)
COUNT = Range(1)
NON_NEGATIVE = Range(0)
SEED = Range(0)
FRACTION = Range(0, 1)

# Every number of the schema and where it may lie; tests/test_validation.py checks that no
# number of the schema is missing here, so a new setting cannot skip its check.
RANGES: dict[str, Range] = {
    "model.max_prompt_length": COUNT,
    "model.max_length": COUNT,
    "model.seed": SEED,
    "model.n_params": Range(0, closed_low=False, null="the model's own count"),
    "data.n_train": Range(1, null="the data's default size"),
    "data.n_test": Range(1, null="the data's default size"),
    "data.seed": SEED,
    "data.world.prompt_length": COUNT,
    "data.world.max_response_length": COUNT,
    "data.world.strength": NON_NEGATIVE,
    "data.world.temperature": POSITIVE,
    "data.world.end_bias": Range(),
    "data.world.seed": SEED,
    "data.world.test_samples": COUNT,
    "loss.beta": POSITIVE,
    "loss.nll_weight": NON_NEGATIVE,
    "loss.label_smoothing": Range(0, 0.5, closed_high=False),
    "loss.mu": POSITIVE,
    "loss.gamma": NON_NEGATIVE,
    "loss.alpha": POSITIVE,
    "loss.history_weight": NON_NEGATIVE,
    "generation.temperature": POSITIVE,
    "generation.top_p": Range(0, 1, closed_low=False),
    "generation.max_new_tokens": COUNT,
    "generation.batch_size": COUNT,
    "generation.shard_size": COUNT,
    "generation.seed": SEED,
    "trainer.epochs": POSITIVE,
    "trainer.lr": POSITIVE,
    # transformers >= 5 reads a warmup below 1 as a ratio and 1 or more as a step count.
    "trainer.warmup_ratio": Range(0, 1, closed_high=False),
    "trainer.weight_decay": NON_NEGATIVE,
    "trainer.batch_size": COUNT,
    "trainer.grad_accumulation": COUNT,
    # 0 turns clipping off.
    "trainer.max_grad_norm": NON_NEGATIVE,
    "trainer.ref_batch_size": COUNT,
    "trainer.logging_steps": COUNT,
    "trainer.seed": SEED,
    "trainer.world_size": COUNT,
    # 0: a checkpoint every tenth of the steps.
    "trainer.save_steps": NON_NEGATIVE,
    "sft.n_train": Range(1, null="the SPIN train split's size"),
    "sft.epochs": POSITIVE,
    "sft.lr": POSITIVE,
    "sft.batch_size": COUNT,
    "baseline.epochs": POSITIVE,
    "baseline.lr": Range(0, closed_low=False, null="trainer.lr, or sft.lr for sft_more"),
    "baseline.beta": POSITIVE,
    "baseline.preferences.n": Range(1, null="all pairs"),
    "baseline.preferences.seed": SEED,
    "lora.r": COUNT,
    "lora.alpha": POSITIVE,
    "lora.dropout": Range(0, 1, closed_high=False),
    "opponent.mixture_weight": FRACTION,
    "opponent.seed": SEED,
    "eval.limit": Range(1, null="every document"),
    "eval.batch_size": COUNT,
    "eval.max_new_tokens": Range(1, null="each task's own"),
    "eval.seed": SEED,
    "eval.n_samples": COUNT,
    "logger.init_timeout": POSITIVE,
    "iter": NON_NEGATIVE,
    "seed": SEED,
}
# The numbers of a ``schedule.<t>`` entry, of a ``spin.given_pairs.<t>`` entry and of an
# ``eval.settings.<task>`` entry, checked under their full keys.
SCHEDULE_RANGES = {"lr": POSITIVE, "beta": POSITIVE, "epochs": POSITIVE, "alpha": POSITIVE}
GIVEN_PAIRS_RANGES = {"n": Range(1, null="all pairs"), "seed": SEED}
EVAL_TASK_RANGES = {"num_fewshot": Range(0, null="the task's own")}


def check_number(key: str, value: Any, allowed: Range) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``value`` is a finite number in
    ``allowed`` (or None where that is allowed): NaN and infinities never pass, since they
    slip through every comparison and fail only after the expensive stages."""
    if value is None and allowed.null:
        return
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not (number and math.isfinite(value) and allowed.holds(value)):
        raise ConfigError(f"{key}={value!r}: expected {allowed.describe()}")


def validate(cfg: DictConfig) -> None:
    """Reject values the schema's types cannot rule out, naming the key and what is allowed.

    Only the settings are checked here; what the machine must have for them (a backend's
    package, QLoRA's GPU, the launch) is checked where a job starts, before any work
    (:func:`spin.job.require_environment`), so a dry run plans for hardware it is not on."""
    check_keys(cfg, Config)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"required value(s) missing: {', '.join(missing)}; set them on the command line, "
            f"e.g. {missing[0]}=..."
        )
    for key, options in ALLOWED.items():
        value = OmegaConf.select(cfg, key)
        if value not in options:
            raise ConfigError(f"{key}={value!r} is not allowed; expected one of {list(options)}")
    for key, allowed in RANGES.items():
        check_number(key, OmegaConf.select(cfg, key), allowed)
    _validate_schedule(cfg)
    _validate_data(cfg)
    _validate_tiny_shape(cfg)
    if cfg.data.source in ("jsonl", "hf", "ultrachat") and not cfg.data.path:
        raise ConfigError(
            f"data.path is required for data.source={cfg.data.source!r}: "
            "set data.path=FILE (or a hub id for hf/ultrachat)"
        )
    check_name(cfg.name, "name")
    for task, settings in cfg.eval.settings.items():
        for name, allowed in EVAL_TASK_RANGES.items():
            check_number(f"eval.settings.{task}.{name}", settings.get(name), allowed)
        if settings.get("path") is not None:
            check_name(task, f"eval.settings.{task} (a user set's name)")
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
    _validate_losses(cfg)
    _validate_comparisons(cfg)
    _validate_given_pairs(cfg)
    _validate_lora(cfg)


def unused_settings(cfg: DictConfig) -> list[str]:
    """Settings this job accepts but will not use, each said in a line: a ``schedule`` or
    ``spin.given_pairs`` entry for an iteration past ``iter`` (a preset may carry them for
    longer chains than one job builds, so they are allowed, and said)."""
    return [
        f"{section}.{t} is set, but this job builds iterations 0..{cfg.iter}: it takes effect "
        f"only with iter={t} or more"
        for section in ("schedule", "spin.given_pairs")
        for t in OmegaConf.select(cfg, section)
        if str(t).isdigit() and int(t) > cfg.iter
    ]


def _validate_schedule(cfg: DictConfig) -> None:
    """Each ``schedule`` entry: an iteration number with IterationOverride's fields."""
    for key, override in cfg.schedule.items():
        if not str(key).isdigit():
            raise ConfigError(f"schedule.{key}: keys are iteration numbers (0, 1, ...)")
        if not isinstance(override, DictConfig):
            raise ConfigError(
                f"schedule.{key}={override!r}: expected settings of iteration {key}, "
                "e.g. +schedule.1.lr=1e-7"
            )
        check_keys(override, IterationOverride, f"schedule.{key}.")
        for name, allowed in SCHEDULE_RANGES.items():
            value = override.get(name)
            if value is not None:
                check_number(f"schedule.{key}.{name}", value, allowed)
        mix = override.get("mix_previous")
        if mix is not None and not isinstance(mix, bool):
            raise ConfigError(f"schedule.{key}.mix_previous={mix!r}: expected true or false")


# The most problems the synthetic arithmetic is asked for: far beyond any experiment here,
# and short of a request that would run for hours before finding it cannot be met.
ARITH_LIMIT = 1_000_000


def _validate_data(cfg: DictConfig) -> None:
    """Data settings beyond their ranges: the arithmetic's step counts and size, the exact
    world's settings (and that only it has exact measures)."""
    symbols = cfg.data.world.symbols
    if cfg.data.source == "world" and not (
        len(symbols) >= 2
        and len(set(symbols)) == len(symbols)
        and all(c.isascii() and c.isalnum() for c in symbols)
    ):
        raise ConfigError(
            f"data.world.symbols={symbols!r}: expected at least two distinct ASCII letters or "
            "digits (each one token of the character tokenizer)"
        )
    if cfg.data.source == "world" and cfg.eval.exact:
        enumerable_responses(len(symbols), cfg.data.world.max_response_length)
    if cfg.data.source != "world" and cfg.eval.exact:
        raise ConfigError(
            f"eval.exact=true needs data.source=world (a known p_data); data.source is "
            f"{cfg.data.source!r}"
        )
    if cfg.data.source == "arith":
        asked = sum(n for n in (cfg.data.n_train, cfg.data.n_test, cfg.sft.n_train) if n)
        if asked > ARITH_LIMIT:
            raise ConfigError(
                f"data.n_train={cfg.data.n_train}, data.n_test={cfg.data.n_test} and "
                f"sft.n_train={cfg.sft.n_train}: the synthetic arithmetic makes at most "
                f"{ARITH_LIMIT} problems"
            )
    steps = list(cfg.data.difficulty)
    if not steps or any(isinstance(d, bool) or d not in names.ARITH_STEPS for d in steps):
        raise ConfigError(
            f"data.difficulty={steps!r}: expected a non-empty list of step counts from "
            f"{list(names.ARITH_STEPS)}"
        )


def _validate_tiny_shape(cfg: DictConfig) -> None:
    """``model.shape``'s sizes: whole positive numbers that make a valid Llama (the width a
    multiple of the heads, the heads of the key/value heads), refused before any model is
    built rather than by transformers mid-run."""
    shape = cfg.model.shape
    if shape is None:
        return
    for name, value in shape.items():
        check_number(f"model.shape.{name}", value, COUNT)
    for whole, part in (("hidden_size", "heads"), ("heads", "kv_heads")):
        if shape[whole] % shape[part]:
            raise ConfigError(
                f"model.shape.{whole}={shape[whole]} is not a multiple of "
                f"model.shape.{part}={shape[part]}"
            )


def _validate_losses(cfg: DictConfig) -> None:
    """Loss settings that only make sense with some losses."""
    loss = cfg.loss
    for key, name in (("loss", loss.name), ("baseline", cfg.baseline.loss)):
        smoothing = loss.label_smoothing if key == "loss" else 0.0
        if smoothing and names.LOSS_ALIASES.get(name, name) != "sigmoid":
            raise ConfigError(
                f"loss.label_smoothing={smoothing} is only used by loss.name='sigmoid', "
                f"not by {name!r}; set it to 0"
            )
    if loss.name in names.LOSS_ALIASES and loss.nll_weight <= 0:
        raise ConfigError(
            f"loss.name={loss.name!r} is {names.LOSS_ALIASES[loss.name]} with the real "
            f"responses' NLL, yet loss.nll_weight={loss.nll_weight}: choose loss={loss.name} "
            "(weight 1) or set loss.nll_weight > 0"
        )


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
        for name, allowed in GIVEN_PAIRS_RANGES.items():
            check_number(f"{prefix}.{name}", given[name], allowed)


def _validate_lora(cfg: DictConfig) -> None:
    """LoRA settings peft would reject late (QLoRA's hardware is checked where a job starts,
    :func:`spin.job.require_environment`)."""
    lora = cfg.lora
    if not lora.target_modules:
        raise ConfigError("lora.target_modules is empty; name the modules to adapt, or all-linear")
    if lora.quantize is not None and not lora.enabled:
        raise ConfigError(
            f"lora.quantize={lora.quantize!r} quantizes the base of LoRA adapters: set "
            "lora.enabled=true too (lora=qlora sets both)"
        )


def _validate_comparisons(cfg: DictConfig) -> None:
    """Baseline and opponent settings that only make sense together."""
    if cfg.opponent.name == "fictitious":
        # The base setting holds for every iteration a schedule entry leaves alone.
        built = sorted({0, *(int(t) for t in cfg.schedule if int(t) <= cfg.iter)})
        mixing = [t for t in built if iteration_settings(cfg, t).mix_previous]
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
