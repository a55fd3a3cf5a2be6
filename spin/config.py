"""Structured configuration of a SPIN experiment.

The dataclasses below are the schema Hydra validates every composed config against: an
unknown key, a value of the wrong type or a missing required value (``???``) fails at
start-up, before any work, with OmegaConf's message naming the full key. Checks that need
more than a type (allowed names, positive numbers) live in :func:`validate`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value is not allowed; the message names the key and the allowed values."""


@dataclass
class ModelConfig:
    """Where the start (SFT) model comes from and how sequences are bounded."""

    name: str = MISSING
    # "tiny" builds a random-init Llama in code; "gguf" dequantises a GGUF file found in
    # an installed package or directory; "hub" loads a local directory or a hub id.
    source: str = "hub"
    path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    max_prompt_length: int = 256
    max_length: int = 512
    seed: int = 0


@dataclass
class DataConfig:
    """Which SFT data set the prompts and real responses come from."""

    name: str = MISSING
    # arith | jsonl | hf | ultrachat
    source: str = "arith"
    path: str | None = None
    split: str = "train"
    test_split: str | None = None
    prompt_field: str | None = "prompt"
    response_field: str | None = "response"
    messages_field: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    difficulty: list[int] = field(default_factory=lambda: [2, 3])
    deduplicate: bool = True


@dataclass
class LossConfig:
    """A SPIN loss variant from :mod:`spin.losses` and its strength."""

    name: str = "sigmoid"
    beta: float = 0.1
    # Weight of the real response's length-normalised NLL added to the loss (0 = off).
    nll_weight: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class GenerationConfig:
    """Self-play generation; ``prompt_format`` is shared by generation and training."""

    backend: str = "hf"
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16
    shard_size: int = 64
    # "chat" uses the tokenizer's chat template; any other string is a template with a
    # "{prompt}" placeholder, e.g. "### Instruction: {prompt}\n\n### Response: ".
    prompt_format: str = "chat"
    seed: int = 0


@dataclass
class TrainerConfig:
    """Optimisation of one iteration (paper: RMSprop, linear schedule, warmup 0.1)."""

    epochs: float = 2.0
    lr: float = 5e-7
    optimizer: str = "rmsprop"
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 8
    grad_accumulation: int = 1
    max_grad_norm: float = 1.0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    ref_batch_size: int = 16
    logging_steps: int = 1
    seed: int = 42


@dataclass
class SpinConfig:
    """How the iterations are chained."""

    # Train iteration t on its own pairs plus those of iteration t-1 (paper's setting).
    mix_previous: bool = True
    # Drop pairs whose generated response equals the real one (they carry no gradient).
    drop_identical: bool = False


@dataclass
class IterationOverride:
    """Settings the paper changes per iteration; unset fields keep the base value."""

    lr: float | None = None
    beta: float | None = None
    epochs: float | None = None
    mix_previous: bool | None = None


@dataclass
class EvalTaskConfig:
    """How one lm-eval task is run and read (``eval.settings.<task>``); unset: the task's own."""

    num_fewshot: int | None = None
    # lm-eval's result key "<metric>,<filter>", e.g. "acc_norm,none"; None: the task's first.
    metric: str | None = None
    # A local copy of the task's hub data set (a directory in the hub layout, or another id).
    dataset_path: str | None = None
    # A user's own JSONL set, scored with an embedded task's prompt and metric (``template``);
    # ``fields`` maps the template's field names to the file's, e.g. {question: prompt}.
    template: str | None = None
    path: str | None = None
    fewshot_path: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Scoring of every model the chain produces on lm-eval tasks (see evaluation/)."""

    name: str = "embedded"
    # lm-eval task or group names; an empty list turns scoring off.
    tasks: list[str] = field(default_factory=list)
    settings: dict[str, EvalTaskConfig] = field(default_factory=dict)
    # Documents per task (a quick look); None scores every document.
    limit: int | None = None
    batch_size: int = 16
    # Generation budget of generative tasks; None keeps each task's own.
    max_new_tokens: int | None = None
    apply_chat_template: bool = False
    seed: int = 1234
    n_samples: int = 8


@dataclass
class LoggerConfig:
    """W&B tracking; the local metrics.jsonl mirror is always written."""

    name: str = "wandb"
    project: str = "spin"
    entity: str | None = None
    # offline unless the user opts in with logger.mode=online
    mode: str = "offline"
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    root: str = "outputs"


@dataclass
class Config:
    """The whole experiment; ``iter`` is the iteration to build up to and report."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    spin: SpinConfig = field(default_factory=SpinConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # iteration number -> IterationOverride fields (checked by validate)
    schedule: dict[str, Any] = field(default_factory=dict)
    name: str = "default"
    iter: int = 0


ALLOWED = {
    "model.source": ("tiny", "gguf", "hub"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "data.source": ("arith", "jsonl", "hf", "ultrachat"),
    "generation.backend": ("hf",),
    "trainer.optimizer": ("rmsprop", "adamw"),
    "trainer.precision": ("fp32", "bf16", "fp16"),
    "logger.name": ("wandb", "none"),
    "logger.mode": ("offline", "online", "disabled"),
}

POSITIVE = (
    "loss.beta",
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
)


def check_keys(node: Any, schema: type, prefix: str = "") -> None:
    """Reject keys the schema does not know, including ones force-added with ``+key=``."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in hints:
            raise ConfigError(f"{prefix}{key} is not a known key; expected one of {names}")
        if dataclasses.is_dataclass(hints[key]):
            check_keys(node[key], hints[key], f"{prefix}{key}.")


def validate(cfg: DictConfig) -> None:
    """Reject values the schema's types cannot rule out, naming the key and what is allowed."""
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
        for name in ("lr", "beta", "epochs"):
            value = override.get(name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(f"schedule.{key}.{name}={value!r} must be a positive number")

    allowed = {**ALLOWED, "loss.name": tuple(sorted(LOSSES))}
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
    if cfg.iter < 0:
        raise ConfigError(f"iter={cfg.iter} must be >= 0 (iterations count from 0)")
    if cfg.model.max_prompt_length >= cfg.model.max_length:
        raise ConfigError(
            f"model.max_prompt_length={cfg.model.max_prompt_length} must be smaller than "
            f"model.max_length={cfg.model.max_length}"
        )
    fmt = cfg.generation.prompt_format
    if fmt != "chat" and "{prompt}" not in fmt:
        raise ConfigError(
            f"generation.prompt_format={fmt!r} must be 'chat' or a template containing '{{prompt}}'"
        )


@dataclass(frozen=True)
class IterationSettings:
    """The effective per-iteration values after applying ``schedule`` to the base config."""

    lr: float
    beta: float
    epochs: float
    mix_previous: bool


def iteration_settings(cfg: DictConfig, t: int) -> IterationSettings:
    """Resolve the schedule for iteration ``t``: an override for ``t`` wins over the base."""
    override: Any = cfg.schedule.get(str(t)) or {}

    def pick(name: str, base: Any) -> Any:
        value = override.get(name) if override else None
        return base if value is None else value

    return IterationSettings(
        lr=pick("lr", cfg.trainer.lr),
        beta=pick("beta", cfg.loss.beta),
        epochs=pick("epochs", cfg.trainer.epochs),
        mix_previous=pick("mix_previous", cfg.spin.mix_previous),
    )


def register_schema() -> None:
    """Make the schema available to Hydra's defaults list as ``spin_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="spin_schema", node=Config)
