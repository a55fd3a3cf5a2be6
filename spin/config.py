"""Structured configuration of a SPIN experiment.

The dataclasses below are the schema Hydra validates every composed config against: an
unknown key, a value of the wrong type or a missing required value (``???``) fails at
start-up, before any work, with OmegaConf's message naming the full key. Checks that need
more than a type (allowed names, positive numbers) live in :mod:`spin.validation`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, ValidationError

from spin.errors import ConfigError


@dataclass
class TinyShape:
    """The size of a ``source=tiny`` model (the default: two layers of width 32)."""

    hidden_size: int = 32
    intermediate_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2


@dataclass
class ModelConfig:
    """Where the start (SFT) model comes from and how sequences are bounded."""

    name: str = MISSING
    # "tiny" builds a random-init Llama in code; "gguf" dequantises a GGUF file found in
    # an installed package or directory; "hub" loads a local directory or a hub id.
    source: str = "hub"
    path: str | None = None
    # The hub revision (commit, branch or tag) of a model loaded by hub id: model and
    # tokenizer, in every stage and in scoring; a local directory is used as it is. Part of
    # the start model's key when set. None: the hub's main branch.
    revision: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    max_prompt_length: int = 256
    # A prompt longer than max_prompt_length tokens (as formatted): "truncate" keeps its
    # last tokens in generation and training alike, with a warning; "reject" stops the run
    # before any model work, naming the record.
    prompt_overflow: str = "truncate"
    # prompt: every prompt over max_prompt_length is cut (as prompt_overflow says) in
    # generation and training alike; pair: the official SPIN code's rule, under which
    # generation never cuts a prompt and training cuts one only when it and the longer
    # response of its pair exceed max_length (then both responses too, to
    # max_length - max_prompt_length tokens).
    truncation: str = "prompt"
    max_length: int = 512
    seed: int = 0
    # Parameter count, for dry-run compute estimates of models that are not at hand.
    n_params: float | None = None
    # A tiny model's size (source=tiny); None: the two-layer test model. Part of the start
    # model's key when set.
    shape: TinyShape | None = None


@dataclass
class WorldConfig:
    """The synthetic language of ``data.source=world`` (spin/data/world.py), whose
    p_data is known exactly."""

    # One character per symbol, each one token of the character tokenizer.
    symbols: str = "abcd"
    prompt_length: int = 3
    max_response_length: int = 4
    # How strongly the prompt shapes the response (0: not at all).
    strength: float = 1.0
    # Divides every logit: below 1 peaked, above 1 flat.
    temperature: float = 1.0
    # Added to the end logit: positive, shorter responses.
    end_bias: float = 0.0
    # Fixes the language (its tables); data.seed draws the data from it.
    seed: int = 0
    # Responses drawn per test prompt (the held-out NLL's documents).
    test_samples: int = 4


# Above this many responses per prompt, the exact measures (every response scored after
# every prompt) are refused: the study's world has 39.
MAX_ENUMERATED = 20_000


def enumerable_responses(n_symbols: int, max_length: int) -> int:
    """How many responses the world's language has per prompt; :class:`ConfigError` naming
    ``data.world`` when there are too many to list (checked at start-up and by the world)."""
    count = sum(n_symbols**k for k in range(1, max_length + 1))
    if count > MAX_ENUMERATED:
        raise ConfigError(
            f"data.world: {count} responses per prompt, more than {MAX_ENUMERATED} "
            "(lower data.world.max_response_length or use fewer symbols for exact KL)"
        )
    return count


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
    # Which n_train records of a loaded data set: "first" in file order, or "random", a
    # sample seeded by data.seed (the paper samples its 50k UltraChat prompts at random).
    # Samples nest: a larger n_train keeps every record of a smaller one.
    selection: str = "first"
    seed: int = 0
    difficulty: list[int] = field(default_factory=lambda: [2, 3])
    deduplicate: bool = True
    world: WorldConfig = field(default_factory=WorldConfig)


@dataclass
class LossConfig:
    """A SPIN loss variant from :mod:`spin.losses` and its strength."""

    name: str = "sigmoid"
    beta: float = 0.1
    # Weight of the real response's length-normalised NLL added to the loss (0 = off).
    nll_weight: float = 0.0
    label_smoothing: float = 0.0
    # Variant settings: a loss receives (and its model's key records) only those its function
    # declares (spin/losses.py). SPACE's noise ratio:
    mu: float = 1.0
    # SimPO's target margin between the length-normalised rewards:
    gamma: float = 0.5
    # IRIS's Renyi order (a reconstruction, docs/variants.md): 1 = untilted (SPACE), 2 = the
    # chi-squared-type tilt; 1.5, between them, up-weights hard pairs without letting the
    # worst pair of a micro-batch dominate. Per iteration: schedule.<t>.alpha.
    alpha: float = 1.5
    # T-SPIN's weight b of the historical advantage over iteration 0's generation:
    history_weight: float = 0.1


@dataclass
class GenerationConfig:
    """Self-play generation; ``prompt_format`` is shared by generation and training unless
    ``train_prompt_format`` names another one for training."""

    # hf: transformers' generate; vllm: a vLLM engine (pip install -e '.[vllm]'), fed the
    # same prompt ids and settings, writing the same shards (spin/generation.py).
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
    # The format training scores prompts in, when it is not prompt_format (None): the
    # official code generates with "### Instruction: {prompt}\n\n### Response: " and trains
    # in the chat template (generation=official_hf). Same values as prompt_format.
    train_prompt_format: str | None = None
    # The system turn before the user turn in every chat-formatted prompt (generation,
    # training and chat-format evaluation alike): None renders no system turn; "" an empty
    # one, as zephyr-7b-sft-full was trained and the official SPIN training formats prompts.
    system_prompt: str | None = None
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
    # Batches of pairs of similar length (less padding); false: a plain seeded shuffle, as
    # the official SPIN code orders its batches. Either order resumes exactly after a kill.
    group_by_length: bool = True
    ref_batch_size: int = 16
    logging_steps: int = 1
    seed: int = 42
    # Processes (GPUs) the global batch spreads over; batch_size counts pairs per process,
    # so a step trains on batch_size x grad_accumulation x world_size pairs. Dry-run
    # estimates use it; a distributed run checks it against the launched process count.
    world_size: int = 1
    # none: one process; ddp, fsdp, zero3 (DeepSpeed ZeRO-3): several, launched with
    # `accelerate launch --config_file conf/accelerate/<value>.yaml` (spin/distributed.py).
    distributed: str = "none"
    # A checkpoint every this many optimizer steps, for a killed run to resume from (the
    # last two are kept, and deleted once the model is saved); 0: every tenth of the steps.
    save_steps: int = 0


@dataclass
class GivenPairsConfig:
    """A data set of pairs an iteration trains on instead of generating its own
    (``spin.given_pairs.<t>``), e.g. the authors' released UCLA-AGI/SPIN_iter0: per row, two
    chats of a user turn and an assistant turn (spin/data/released.py)."""

    # A hub id, a local .jsonl/.json/.parquet file, or a directory in the hub layout.
    path: str | None = None
    split: str = "train"
    real_field: str = "real"
    generated_field: str = "generated"
    # Pairs to train on, drawn with ``seed`` and kept in file order; None: all.
    n: int | None = None
    seed: int = 0


@dataclass
class SpinConfig:
    """How the iterations are chained."""

    # Train iteration t on its own pairs plus those of iteration t-1 (paper's setting).
    mix_previous: bool = True
    # Drop pairs whose generated response equals the real one (they carry no gradient).
    drop_identical: bool = False
    # Iteration number -> GivenPairsConfig fields: a data set whose pairs that iteration
    # trains on instead of generating, e.g. +spin.given_pairs.0.path=UCLA-AGI/SPIN_iter0
    # (checked by validate; read with given_pairs_config).
    given_pairs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTConfig:
    """An optional supervised stage before iteration 0, so a small experiment can start from
    a model fine-tuned on the very data SPIN then uses (as the paper's start model was)."""

    enabled: bool = False
    # Records of the data's train split to fine-tune on; None: the SPIN train split's size.
    # Larger than data.n_train, they include every SPIN prompt (train splits nest).
    n_train: int | None = None
    epochs: float = 1.0
    lr: float = 2e-5
    batch_size: int = 8


@dataclass
class PreferenceConfig:
    """Preference pairs of the DPO baselines (``baseline.preferences``)."""

    # arith: a correct solution against one with a plausible slip, for the SPIN train prompts;
    # ultrafeedback: HuggingFaceH4/ultrafeedback_binarized or a local copy; jsonl: a user file.
    source: str = "arith"
    path: str | None = None
    split: str = "train_prefs"
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    # Pairs to train on; None: all (arith: one per SPIN train prompt).
    n: int | None = None
    seed: int = 0
    # Drop pairs whose chosen equals rejected (ultrafeedback, jsonl): DPO learns nothing from
    # them, but they fill batches; the alignment-handbook recipe (61a11a5) kept them.
    drop_ties: bool = True


@dataclass
class LoraConfig:
    """LoRA adapters for every training stage (``lora.enabled``), through peft; see spin/lora.py.

    Each training run adds fresh adapters to the model it starts from and merges them into
    its weights at the end, so every model of the chain is an ordinary full model.
    """

    enabled: bool = False
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    # Module names to adapt (the Llama/Mistral projections by default); ["all-linear"]:
    # every linear layer but the output head.
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    # null: adapters on the full-precision model; "4bit": QLoRA, on a 4-bit NF4 copy
    # (bitsandbytes, CUDA only), which the reference pass then uses too.
    quantize: str | None = None


@dataclass
class BaselineConfig:
    """What a job builds: the SPIN chain (``none``) or one of the paper's comparisons."""

    # none | sft (start model as is) | sft_more (further SFT on the real responses) |
    # dpo (DPO on preference pairs) | spin_dpo (DPO after SPIN iteration ``iter``)
    name: str = "none"
    epochs: float = 1.0
    # None: trainer.lr for DPO, sft.lr for sft_more
    lr: float | None = None
    # DPO's loss from spin.losses and its strength (chosen in place of real, rejected of
    # generated).
    loss: str = "sigmoid"
    beta: float = 0.1
    preferences: PreferenceConfig = field(default_factory=PreferenceConfig)


@dataclass
class OpponentConfig:
    """Which responses the main player learns to tell from the real ones, and against which
    reference (arXiv 2404.04291)."""

    # previous: iterate t's own generations, reference p_t (the paper);
    # fictitious: per prompt, a generation drawn from all iterates 0..t, reference p_t;
    # kl_mixture: the paper's pairs, reference a * log p_t + (1 - a) * log p_0.
    name: str = "previous"
    mixture_weight: float = 0.5
    seed: int = 0


@dataclass
class IterationOverride:
    """Settings the paper changes per iteration; unset fields keep the base value."""

    lr: float | None = None
    beta: float | None = None
    epochs: float | None = None
    mix_previous: bool | None = None
    # IRIS's Renyi order (loss.alpha) for this iteration; other losses ignore it.
    alpha: float | None = None


@dataclass
class EvalTaskConfig:
    """How one lm-eval task is run and read (``eval.settings.<task>``); unset: the task's own."""

    num_fewshot: int | None = None
    # lm-eval's result key "<metric>,<filter>", e.g. "acc_norm,none"; None: the task's first.
    metric: str | None = None
    # A local copy of the task's hub data set (a directory in the hub layout, or another id).
    dataset_path: str | None = None
    # The split few-shot examples are drawn from (lm-eval's fewshot_split), e.g. "train";
    # None: the task's own (its fewshot_split, else its training, validation, test split).
    # Naming the split a task already uses can still change the draws of a task without a
    # test split (HellaSwag): lm-eval then stops drawing one extra example to exclude the
    # evaluated document, which it does when the two splits compare equal (None == None).
    fewshot_split: str | None = None
    # Stop sequences of a generative task (lm-eval's generation_kwargs.until); None: the task's.
    until: list[str] | None = None
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
    # The system turn before the user turn of chat-formatted prompts (apply_chat_template):
    # None renders none, "" an empty one; the chain's own by default (generation.system_prompt).
    system_prompt: str | None = "${generation.system_prompt}"
    # Also lm-eval's few-shot seed: lm-eval 0.4.0 drew every task's examples with seed 1234.
    seed: int = 1234
    # Whether every input starts with the tokenizer's BOS token: None leaves it to the
    # tokenizer (lm-eval's choice since 0.4.10, PR 3347; Llama's and Mistral's add it), false
    # never (lm-eval 0.4.0 for causal models), true always.
    add_bos_token: bool | None = None
    # Whether lm-eval adds the EOS token's text to each generative task's stop sequences (it
    # does since 0.4.2, PR 1480; lm-eval 0.4.0 stopped at the task's own alone).
    eos_stop: bool = True
    # A group's score (MMLU's over its 57 subjects): the plain mean of its subtasks
    # ("subtasks", the Open LLM Leaderboard v1's) or of its documents ("documents": subtasks
    # weighted by their number of documents, as lm-eval 0.4.0 and today's mmlu row do).
    group_average: str = "subtasks"
    n_samples: int = 8
    # Beside the tasks (whenever there are any): the NLL per token of the data's test-split
    # responses and the share reproduced by greedy decoding, logged as eval/<data>_nll and
    # eval/<data>_greedy_match (evaluation/heldout.py); data.n_test sizes it, eval.limit caps it.
    heldout_nll: bool = True
    # With data.source=world: the exact divergences from p_data (and from the SFT sample)
    # by enumerating every response of the language, logged as eval/<data>_kl_fwd etc.
    # (evaluation/exact.py). Scoring runs for these even when eval.tasks is empty.
    exact: bool = False


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
    # Seconds an online run may take to start before the job stops, before any work,
    # saying how to run offline instead (W&B's own wait is 90 s, and longer with retries).
    init_timeout: float = 30.0


@dataclass
class PathsConfig:
    root: str = "outputs"


@dataclass
class ReleasedModel:
    """One model ``released.py`` scores: a hub id or a local copy, shown beside a row of the
    paper's table (the entry's key in ``released.models``)."""

    path: str = MISSING
    revision: str | None = None


@dataclass
class ReleasedConfig:
    """The authors' released models (conf/released.yaml): paper row (``sft``,
    ``spin_iter0`` .. ``spin_iter3``, ``dpo``) -> where the model is."""

    models: dict[str, ReleasedModel] = field(default_factory=dict)


@dataclass
class Config:
    """The whole experiment; ``iter`` is the iteration to build up to and report."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    spin: SpinConfig = field(default_factory=SpinConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    opponent: OpponentConfig = field(default_factory=OpponentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    released: ReleasedConfig = field(default_factory=ReleasedConfig)
    # iteration number -> IterationOverride fields (checked by validate)
    schedule: dict[str, Any] = field(default_factory=dict)
    name: str = "default"
    iter: int = 0
    # The run's seed, a sweep axis: added to the seeds of everything after the start model
    # (training order, LoRA initialisation, sampled generation, fictitious-play draws), so
    # seeds of one setting share the start model (and its SFT) and greedy generations.
    seed: int = 0
    # Validate and print the plan (stages, sizes, steps, compute) without running anything.
    dry_run: bool = False


# A name from a config that becomes a folder (``name``, a user eval set's name): one plain
# path component, so no config can make the project write outside ``paths.root``.
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(value: Any, key: str) -> str:
    """``value`` if it is safe as one folder name, else :class:`ConfigError` naming ``key``."""
    text = str(value)
    if not SAFE_NAME.fullmatch(text) or text in (".", ".."):
        raise ConfigError(
            f"{key}={text!r} becomes a folder name under paths.root; expected letters, digits "
            "and '_', '.', '-' only (not '.' or '..')"
        )
    return text


def folder_name(value: Any) -> str:
    """``value`` as one folder name: path separators become '_' (a sweep job's overrides,
    e.g. ``data.path=/data/x.jsonl``, name its folder and must not nest or climb out)."""
    return str(value).replace("/", "_").replace("\\", "_")


def check_keys(node: Any, schema: type, prefix: str = "") -> None:
    """Reject keys the schema does not know, including ones force-added with ``+key=``."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in hints:
            raise ConfigError(f"{prefix}{key} is not a known key; expected one of {names}")
        if dataclasses.is_dataclass(hints[key]):
            check_keys(node[key], hints[key], f"{prefix}{key}.")


def given_pairs_config(cfg: DictConfig, t: int) -> DictConfig | None:
    """Iteration ``t``'s ``spin.given_pairs`` entry with GivenPairsConfig's defaults and
    types, or None when iteration ``t`` generates its pairs. The entries are a plain dict in
    the schema so that ``+spin.given_pairs.0.path=...`` can add one from the command line."""
    entry = cfg.spin.given_pairs.get(str(t))
    if entry is None:
        return None
    prefix = f"spin.given_pairs.{t}"
    if not isinstance(entry, DictConfig):
        raise ConfigError(f"{prefix}={entry!r}: expected fields of GivenPairsConfig, e.g. path")
    check_keys(entry, GivenPairsConfig, f"{prefix}.")
    try:
        return OmegaConf.merge(OmegaConf.structured(GivenPairsConfig), entry)
    except ValidationError as error:
        reason = str(error.msg).splitlines()[0]  # without OmegaConf's key and type lines
        raise ConfigError(f"{prefix}.{error.key}: {reason}") from error


@dataclass(frozen=True)
class IterationSettings:
    """The effective per-iteration values after applying ``schedule`` to the base config."""

    lr: float
    beta: float
    epochs: float
    mix_previous: bool
    alpha: float


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
        alpha=pick("alpha", cfg.loss.alpha),
    )


def register_schema() -> None:
    """Make the schema available to Hydra's defaults list as ``spin_schema``. The resolvers
    conf/config.yaml names job folders with are the entry shell's (spin/entry.py), since
    claiming a folder touches the disk and, under a distributed launch, the process group."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="spin_schema", node=Config)
