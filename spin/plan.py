"""The dry-run plan: what a config would build and roughly what it would cost, offline.

SPIN's cost is the first thing to know before a run: every iteration repeats a generation
pass over all training prompts and a full fine-tune on twice as many pairs. The plan lists
the chain's stages with their sizes, optimizer steps and compute from the config alone: no
model is loaded, no hub data is fetched, nothing is generated or trained. Local data (the
synthetic arithmetic set, a local file or directory) is read to count it exactly; a hub data
set is sized from ``data.n_train`` or reported as unknown.

Token counts are upper bounds from the configured lengths. Compute follows the usual
transformer estimate (2 FLOPs per parameter per token forward, 6 trained), and time divides
it by an assumed sustained throughput (:data:`HARDWARE`); decoding is also bounded below by
reading every weight once per step, the limit that usually binds for generation.
Evaluation sizes are estimates from approximate per-task document counts and lengths.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluation.plan import TASKS_DIR, TaskPlan, plan_tasks
from spin.config import iteration_settings
from spin.data import Splits, load_preferences, load_splits

BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
# Subword tokenizers average about four characters per token on English text; the tiny
# test model's tokenizer is character-level.
CHARS_PER_TOKEN = 4
HOUR = 3600.0


@dataclass(frozen=True)
class Hardware:
    """One device type and the share of its peak a run is assumed to sustain."""

    name: str
    description: str
    peak_flops: float  # per device, dense matrix multiplies at the training precision
    bandwidth: float  # bytes per second of memory per device
    utilisation: float  # fraction of peak_flops sustained over a stage

    @property
    def sustained_flops(self) -> float:
        return self.peak_flops * self.utilisation


HARDWARE = {
    "a100": Hardware("a100", "NVIDIA A100 80GB SXM, bf16 dense", 312e12, 2.0e12, 0.4),
    "h100": Hardware("h100", "NVIDIA H100 SXM, bf16 dense", 989e12, 3.35e12, 0.4),
    # torch.mm fp32 peak measured on the project's 2-core reference machine
    # (docs/performance.md); 2 GB/s is the order of the weight-read rate its decoding
    # reached in the README's default run (256 steps over 540 MB of weights in 96 s).
    "cpu": Hardware("cpu", "2 CPU cores, fp32 (measured matmul peak)", 8.0e10, 2.0e9, 0.2),
}


def hardware_profile(name: str, utilisation: float | None = None) -> Hardware:
    """A profile of :data:`HARDWARE`, optionally at another assumed utilisation."""
    if name not in HARDWARE:
        raise ValueError(f"hardware {name!r} is not known; expected one of {sorted(HARDWARE)}")
    if utilisation is None:
        return HARDWARE[name]
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation={utilisation} must be a fraction in (0, 1]")
    return replace(HARDWARE[name], utilisation=utilisation)


# The paper's reported cost on 8 x A100 80GB (PAPER.md, "Cost"): its training recomputes the
# reference model every step, which this project does once in the reference stage.
PAPER_HARDWARE = "8 x A100 80GB"
PAPER_MODEL = "zephyr-7b-sft-full"
PAPER_GENERATION_S = 1.45 * HOUR
PAPER_TRAIN_S = {0: 4.32 * HOUR, 1: 8.64 * HOUR, 2: 8.64 * HOUR, 3: 8.64 * HOUR}


@dataclass(frozen=True)
class TaskCost:
    """Approximate size of one evaluation task: estimates, not measurements."""

    docs: int
    choices: float  # log-likelihood requests per document (1 for a generative task)
    example_tokens: float  # one question with its answer: the unit a few-shot context repeats
    prefix_tokens: float = 0.0  # fixed text every request starts with
    generated_tokens: int = 0  # generation budget per document (generative tasks)
    subtasks: int = 1  # eval.limit counts documents per subtask

    def with_budget(self, max_new_tokens: int | None) -> TaskCost:
        if max_new_tokens is None or not self.generated_tokens:
            return self
        return replace(self, generated_tokens=max_new_tokens)


# Open LLM Leaderboard v1 tasks: documents of the scored split (ARC-challenge test, TruthfulQA
# validation, Winogrande-xl validation, GSM8k test, HellaSwag validation, MMLU test over 57
# subjects); answer choices per document; tokens of one example in a Llama/Mistral tokenizer
# (rough averages); GSM8k generates up to lm-eval's default budget of 256 tokens.
LEADERBOARD = {
    "arc_challenge": TaskCost(1172, 4, 45),
    "truthfulqa_mc2": TaskCost(817, 7, 40, prefix_tokens=210),
    "winogrande": TaskCost(1267, 2, 30),
    "gsm8k": TaskCost(1319, 1, 160, generated_tokens=256),
    "hellaswag": TaskCost(10042, 4, 100),
    "mmlu": TaskCost(14042, 4, 100, prefix_tokens=15, subtasks=57),
}
DEFAULT_GEN_TOKENS = 256  # lm-eval's generation budget when a task sets none


@dataclass(frozen=True)
class Count:
    """A size and how it was obtained, so the plan says which numbers are exact."""

    value: float | None
    source: str


@dataclass(frozen=True)
class TaskEstimate:
    """One planned evaluation task, sized for one model."""

    name: str
    num_fewshot: int
    docs: int | None
    tokens: float | None
    generated_tokens: int
    source: str


@dataclass(frozen=True)
class Stage:
    """One unit of work of the plan; sizes are None where they cannot be known offline."""

    name: str  # sft | generation | reference | reference_start | train | eval | ...
    iteration: int | None  # SPIN iteration; None outside the chain
    model: str  # the model that runs, e.g. "M_1" or "M_0 -> M_1" for training
    items: int | None
    unit: str  # prompts | pairs | records | docs
    tokens: float | None = None  # tokens of one pass over the items (bound, or estimate)
    epochs: float = 1.0
    steps: int | None = None  # optimizer steps (training stages)
    flops: float | None = None
    decode_steps: int = 0  # sequential decoding steps per device
    seconds: float | None = None
    paper_seconds: float | None = None


@dataclass(frozen=True)
class Plan:
    """Everything a config would build, with sizes and a compute estimate."""

    name: str
    model: str
    n_params: Count
    weight_bytes: float | None
    n_train: Count
    devices: int
    global_batch: int
    chain: str  # what the job builds, in words
    hardware: Hardware
    stages: list[Stage]
    tasks: list[TaskEstimate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def iterations(self) -> list[int]:
        return sorted({s.iteration for s in self.stages if s.iteration is not None})

    def stages_of(self, iteration: int | None) -> list[Stage]:
        return [s for s in self.stages if s.iteration == iteration]


# ---------------------------------------------------------------------------- sizes
def model_size(cfg: DictConfig) -> Count:
    """Parameter count from ``model.n_params``; the tiny model is small enough to build."""
    if cfg.model.n_params is not None:
        return Count(float(cfg.model.n_params), "model.n_params")
    if cfg.model.source == "tiny":
        from spin.models import build_tiny

        model, _ = build_tiny(cfg.model.seed)
        return Count(float(sum(p.numel() for p in model.parameters())), "counted (built)")
    return Count(None, "unknown: set model.n_params for compute estimates")


def is_local(data: Any) -> bool:
    """True when the data can be read without the network."""
    return data.source == "arith" or (data.path is not None and Path(data.path).exists())


def local_splits(data: Any) -> Splits | None:
    """The data's splits when they are local (read, not downloaded), else None."""
    return load_splits(data) if is_local(data) else None


def train_size(cfg: DictConfig, splits: Splits | None) -> Count:
    """Training prompts: counted when the data is local, else ``data.n_train`` or unknown."""
    if splits is not None:
        return Count(len(splits.train), "counted")
    if cfg.data.n_train is not None:
        return Count(
            cfg.data.n_train,
            "data.n_train; at most: duplicates and test prompts are dropped first",
        )
    return Count(None, f"unknown: {cfg.data.path} is not local and data.n_train is not set")


def sft_size(cfg: DictConfig, n_train: Count) -> Count:
    """Records of the SFT stage: ``sft.n_train`` of the train split, else all SPIN prompts."""
    if cfg.sft.n_train is None:
        return n_train
    if is_local(cfg.data):
        data = OmegaConf.merge(cfg.data, {"n_train": cfg.sft.n_train})
        return Count(len(load_splits(data).train), "counted")
    return Count(cfg.sft.n_train, "sft.n_train; at most")


def preference_count(cfg: DictConfig, splits: Splits | None, n_train: Count) -> Count:
    """DPO pairs of the baselines, counted with the pipeline's loader when they are local."""
    prefs = cfg.baseline.preferences
    local_file = prefs.path is not None and Path(prefs.path).exists()
    if (prefs.source == "arith" and splits is not None) or (prefs.source != "arith" and local_file):
        return Count(len(load_preferences(prefs, splits.train if splits else [])), "counted")
    if prefs.source == "arith":
        bound = n_train.value if prefs.n is None else prefs.n
        if n_train.value is not None:
            bound = min(bound, n_train.value)
        return Count(bound, "one per train prompt; at most")
    if prefs.n is not None:
        return Count(prefs.n, "baseline.preferences.n; at most")
    return Count(None, f"unknown: {prefs.path or prefs.source} is not counted offline")


def global_batch(cfg: DictConfig, per_device: int) -> int:
    """Items per optimizer step: per device x accumulation x processes."""
    return per_device * cfg.trainer.grad_accumulation * cfg.trainer.world_size


def optimizer_steps(items: float | None, batch: int, epochs: float) -> int | None:
    """Optimizer steps of the Trainer: whole batches per epoch (the last one partial)."""
    if items is None:
        return None
    return math.ceil(epochs * math.ceil(items / batch))


def pair_tokens(cfg: DictConfig) -> int:
    """Bound of one packed SPIN pair: the real sequence plus the generated response."""
    length = cfg.model.max_length
    return length + min(cfg.generation.max_new_tokens, length - 1)


# ----------------------------------------------------------------------- evaluation
def task_cost(plan: TaskPlan, chars_per_token: float) -> TaskCost | None:
    """Approximate size of a planned task: the leaderboard table, or its local files."""
    if plan.base in LEADERBOARD and not plan.is_user_set:
        return LEADERBOARD[plan.base]
    test = plan.data_files.get("test")
    if test is None or not test.is_file():
        return None
    docs = [json.loads(line) for line in test.read_text().splitlines() if line.strip()]
    if not docs:
        return None
    sizes = [_doc_size(doc) for doc in docs]
    generated = _generation_budget(plan.base)
    return TaskCost(
        docs=len(docs),
        choices=1 if generated else sum(c for _, c in sizes) / len(sizes),
        example_tokens=sum(chars for chars, _ in sizes) / len(sizes) / chars_per_token,
        generated_tokens=generated,
    )


def _doc_size(doc: Any) -> tuple[float, int]:
    """Characters of one request (question plus one average answer choice) and the number
    of choices (strings in a list)."""
    chars, choices = 0.0, 1
    for value in doc.values() if isinstance(doc, dict) else []:
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            chars += sum(len(v) for v in value) / len(value)
            choices = len(value)
        elif isinstance(value, dict):
            inner, inner_choices = _doc_size(value)
            chars += inner
            choices = max(choices, inner_choices)
    return chars, choices


def _generation_budget(task: str) -> int:
    """Generation budget of a project task file (0 for a multiple-choice task)."""
    path = TASKS_DIR / f"{task}.yaml"
    if not path.is_file():
        return 0
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(path, resolve_func=False)
    if config.get("output_type") != "generate_until":
        return 0
    return int(config.get("generation_kwargs", {}).get("max_gen_toks", DEFAULT_GEN_TOKENS))


def estimate_task(plan: TaskPlan, eval_cfg: Any, chars_per_token: float) -> TaskEstimate:
    """Documents and tokens of one task for one model, honouring ``eval.limit``."""
    shots = plan.num_fewshot or 0
    cost = task_cost(plan, chars_per_token)
    if cost is None:
        return TaskEstimate(plan.name, shots, None, None, 0, "no size estimate")
    cost = cost.with_budget(eval_cfg.max_new_tokens)
    docs = cost.docs
    if eval_cfg.limit is not None:
        docs = min(docs, eval_cfg.limit * cost.subtasks)
    per_request = cost.prefix_tokens + (shots + 1) * cost.example_tokens
    tokens = docs * (cost.choices * per_request + cost.generated_tokens)
    source = "leaderboard table" if plan.base in LEADERBOARD else "local files"
    return TaskEstimate(plan.name, shots, docs, tokens, cost.generated_tokens, source)


# --------------------------------------------------------------------------- stages
class _Builder:
    """Collects the stages of one config; one method per kind of stage."""

    def __init__(self, cfg: DictConfig, hardware: Hardware) -> None:
        self.cfg = cfg
        self.hardware = hardware
        self.n_params = model_size(cfg)
        self.splits = local_splits(cfg.data)
        self.n_train = train_size(cfg, self.splits)
        self.devices = cfg.trainer.world_size
        self.spin_batch = global_batch(cfg, cfg.trainer.batch_size)
        chars = 1 if cfg.model.source == "tiny" else CHARS_PER_TOKEN
        self.tasks = [estimate_task(p, cfg.eval, chars) for p in plan_tasks(cfg.eval)]
        self.stages: list[Stage] = []

    @property
    def weight_bytes(self) -> float | None:
        n = self.n_params.value
        return None if n is None else n * BYTES_PER_PARAM[self.cfg.model.dtype]

    def add(self, stage: Stage, flops_per_token: int) -> None:
        """Add ``stage`` with its FLOPs (per parameter per token, times epochs) and time."""
        n = self.n_params.value
        flops = None
        if n is not None and stage.tokens is not None:
            flops = flops_per_token * n * stage.tokens * stage.epochs
        seconds = stage_seconds(
            flops, stage.decode_steps, self.hardware, self.devices, self.weight_bytes
        )
        self.stages.append(replace(stage, flops=flops, seconds=seconds))

    def decode_steps(self, sequences: float | None, batch: int, new_tokens: int) -> int:
        """Sequential decoding steps per device when every device decodes its share."""
        if sequences is None or not new_tokens:
            return 0
        return math.ceil(sequences / (batch * self.devices)) * new_tokens

    def paper(self, seconds: float | None) -> float | None:
        return seconds if self.cfg.model.name == PAPER_MODEL else None

    # -------------------------------------------------------------- stage kinds
    def evaluation(self, iteration: int | None, model: str) -> None:
        if not self.tasks:
            return
        known = [t for t in self.tasks if t.tokens is not None]
        unknown = len(known) < len(self.tasks)
        decode = self.decode_steps(
            sum(t.docs for t in known if t.generated_tokens and t.docs),
            self.cfg.eval.batch_size,
            max((t.generated_tokens for t in known), default=0),
        )
        stage = Stage(
            "eval",
            iteration,
            model,
            None if unknown else sum(t.docs for t in known if t.docs),
            "docs",
            tokens=None if unknown else sum(t.tokens for t in known),
            decode_steps=decode,
        )
        self.add(stage, 2)

    def forward(self, stage: Stage, per_item: int) -> None:
        """A forward-only pass (generation, reference) over ``stage.items``."""
        tokens = None if stage.items is None else stage.items * per_item
        self.add(replace(stage, tokens=tokens), 2)

    def training(self, stage: Stage, per_item: int, per_device: int) -> None:
        """A training run of ``stage.epochs`` over ``stage.items`` of ``per_item`` tokens."""
        tokens = None if stage.items is None else stage.items * per_item
        batch = global_batch(self.cfg, per_device)
        steps = optimizer_steps(stage.items, batch, stage.epochs)
        self.add(replace(stage, tokens=tokens, steps=steps), 6)

    def generation(self, t: int) -> None:
        n = _int(self.n_train.value)
        gen = self.cfg.generation
        stage = Stage(
            "generation",
            t,
            f"M_{t}",
            n,
            "prompts",
            decode_steps=self.decode_steps(n, gen.batch_size, gen.max_new_tokens),
            paper_seconds=self.paper(PAPER_GENERATION_S) if t in PAPER_TRAIN_S else None,
        )
        self.forward(stage, self.cfg.model.max_prompt_length + gen.max_new_tokens)

    def spin_iteration(self, t: int) -> None:
        """Generation, reference pass(es), training and scoring of iteration ``t``."""
        settings = iteration_settings(self.cfg, t)
        n = _int(self.n_train.value)
        doubled = settings.mix_previous and t > 0 and self.cfg.opponent.name != "fictitious"
        pairs = None if n is None else n * (2 if doubled else 1)
        per_pair = pair_tokens(self.cfg)
        self.generation(t)
        self.forward(Stage("reference", t, f"M_{t}", pairs, "pairs"), per_pair)
        if self.cfg.opponent.name == "kl_mixture" and t > 0:
            self.forward(Stage("reference_start", t, "M_0", pairs, "pairs"), per_pair)
        stage = Stage(
            "train",
            t,
            f"M_{t} -> M_{t + 1}",
            pairs,
            "pairs",
            epochs=settings.epochs,
            paper_seconds=self.paper(PAPER_TRAIN_S.get(t)),
        )
        self.training(stage, per_pair, self.cfg.trainer.batch_size)
        self.evaluation(t, f"M_{t + 1}")

    def dpo(self, start: str, trained: str) -> None:
        """DPO from ``start`` on the preference pairs: reference pass, training, scoring."""
        pairs = _int(preference_count(self.cfg, self.splits, self.n_train).value)
        per_pair = 2 * self.cfg.model.max_length
        self.forward(Stage("dpo_reference", None, start, pairs, "pairs"), per_pair)
        stage = Stage(
            "dpo_train",
            None,
            f"{start} -> {trained}",
            pairs,
            "pairs",
            epochs=self.cfg.baseline.epochs,
        )
        self.training(stage, per_pair, self.cfg.trainer.batch_size)
        self.evaluation(None, trained)

    def sft(self) -> None:
        """The optional SFT stage that makes M_0 from the configured model."""
        records = _int(sft_size(self.cfg, self.n_train).value)
        stage = Stage("sft", None, "base -> M_0", records, "records", epochs=self.cfg.sft.epochs)
        self.training(stage, self.cfg.model.max_length, self.cfg.sft.batch_size)

    def sft_more(self) -> None:
        """The "SFT one more epoch" baseline: SFT of M_0 on the SPIN train records."""
        n = _int(self.n_train.value)
        stage = Stage(
            "sft_more", None, "M_0 -> SFT+", n, "records", epochs=self.cfg.baseline.epochs
        )
        self.training(stage, self.cfg.model.max_length, self.cfg.sft.batch_size)
        self.evaluation(None, "SFT+")

    def build(self) -> None:
        """The stages in the order a job runs them."""
        if self.cfg.sft.enabled:
            self.sft()
        self.evaluation(None, "M_0")
        baseline = self.cfg.baseline.name
        if baseline in ("none", "spin_dpo"):
            for t in range(self.cfg.iter + 1):
                self.spin_iteration(t)
        if baseline == "sft_more":
            self.sft_more()
        elif baseline == "dpo":
            self.dpo("M_0", "DPO")
        elif baseline == "spin_dpo":
            last = f"M_{self.cfg.iter + 1}"
            self.dpo(last, f"{last}+DPO")


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def stage_seconds(
    flops: float | None,
    decode_steps: int,
    hardware: Hardware,
    devices: int,
    weight_bytes: float | None,
) -> float | None:
    """Compute time at the sustained throughput, or the decoding time when that is longer:
    every decoding step reads all weights once, however small the batch."""
    if flops is None:
        return None
    compute = flops / (hardware.sustained_flops * devices)
    memory = decode_steps * (weight_bytes or 0.0) / hardware.bandwidth
    return max(compute, memory)


def build_plan(cfg: DictConfig, hardware: Hardware = HARDWARE["a100"]) -> Plan:
    """The stages ``cfg`` would run, sized and costed without loading a model or hub data."""
    builder = _Builder(cfg, hardware)
    builder.build()
    return Plan(
        name=cfg.name,
        model=cfg.model.name,
        n_params=builder.n_params,
        weight_bytes=builder.weight_bytes,
        n_train=builder.n_train,
        devices=builder.devices,
        global_batch=builder.spin_batch,
        chain=describe_chain(cfg),
        hardware=hardware,
        stages=builder.stages,
        tasks=builder.tasks,
        notes=_notes(cfg),
    )


def describe_chain(cfg: DictConfig) -> str:
    """The job in words: baseline, iterations, opponent and where t-1 mixing is on."""
    parts = [] if not cfg.sft.enabled else ["SFT stage"]
    if cfg.baseline.name in ("none", "spin_dpo"):
        mixing = [t for t in range(1, cfg.iter + 1) if iteration_settings(cfg, t).mix_previous]
        mixed = ", ".join(map(str, mixing)) if mixing else "none"
        parts.append(
            f"SPIN iterations 0..{cfg.iter}, opponent {cfg.opponent.name}, "
            f"t-1 mixing in iteration(s) {mixed}"
        )
    if cfg.baseline.name != "none":
        parts.append(f"baseline {cfg.baseline.name}")
    return "; ".join(parts)


def _notes(cfg: DictConfig) -> list[str]:
    """The assumptions behind the numbers, in the order the table needs them."""
    length, prompt = cfg.model.max_length, cfg.model.max_prompt_length
    new = cfg.generation.max_new_tokens
    notes = [
        f"tokens: one pass over a stage's items (training FLOPs multiply by epochs), as "
        f"upper bounds: a prompt <= model.max_prompt_length={prompt} plus "
        f"generation.max_new_tokens={new} generated; a SPIN pair is one packed row (prompt "
        f"once) <= model.max_length={length} + {min(new, length - 1)}; a DPO pair <= "
        f"2 x {length}; an SFT record <= {length}. Real sequences are usually much shorter.",
        "FLOPs: 2 x parameters per token forward (generation, reference, eval), 6 x per "
        "trained token, times epochs; attention's own FLOPs and gradient checkpointing's "
        "recomputation are left out (the latter lowers the utilisation a run reaches).",
        "Time: FLOPs / (devices x peak x utilisation), or, when longer, decoding's floor of "
        "one read of all weights per step per device (the bound that binds for generation).",
        "Every stage is assumed to spread over trainer.world_size devices; artifacts an "
        "earlier run built are reused by a real run and counted here as new.",
        "Evaluation sizes are estimates: approximate documents per task and tokens per "
        "example, a few-shot context repeated per answer choice.",
    ]
    if cfg.spin.drop_identical:
        notes.append("spin.drop_identical=true: pair counts are at most these.")
    return notes


# ------------------------------------------------------------------------ formatting
def fmt_count(value: float | None) -> str:
    """A size in three significant digits with a suffix (38.4M); below 10,000 in full."""
    if value is None:
        return "unknown"
    for size, suffix, start in (
        (1e12, "T", 1e12),
        (1e9, "B", 1e9),
        (1e6, "M", 1e6),
        (1e3, "k", 1e4),
    ):
        if abs(value) >= start:
            return f"{value / size:.3g}{suffix}"
    return f"{value:,.0f}"


def fmt_flops(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2e}"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value < 90:
        return f"{value:.1f} s"
    if value < 90 * 60:
        return f"{value / 60:.1f} min"
    if value < 72 * HOUR:
        return f"{value / HOUR:.2f} h"
    return f"{value / (24 * HOUR):,.1f} d"


def total_cell(stages: list[Stage], attr: str, fmt: Any) -> str:
    """A column's sum over ``stages``; "+?" marks a sum that leaves unknown stages out."""
    values = [getattr(s, attr) for s in stages]
    known = [v for v in values if v is not None]
    if not known:
        return "unknown"
    return fmt(sum(known)) + (" +?" if len(known) < len(values) else "")


def plan_seconds(plan: Plan, hardware: Hardware) -> float | None:
    """The plan's total time on other hardware (None when some stage is unknown)."""
    times = [
        stage_seconds(s.flops, s.decode_steps, hardware, plan.devices, plan.weight_bytes)
        for s in plan.stages
    ]
    return None if any(t is None for t in times) else sum(times)


COLUMNS = (
    ("iter", 5),
    ("stage", 16),
    ("model", 16),
    ("items", 17),
    ("tokens", 8),
    ("epochs", 6),
    ("steps", 7),
    ("FLOPs", 9),
    ("time", 9),
    ("paper", 9),
)


def _row(cells: list[str]) -> str:
    return "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w)
        for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    ).rstrip()


def _stage_row(stage: Stage) -> str:
    iteration = "-" if stage.iteration is None else str(stage.iteration)
    items = "unknown" if stage.items is None else f"{stage.items:,} {stage.unit}"
    return _row(
        [
            iteration,
            stage.name,
            stage.model,
            items,
            fmt_count(stage.tokens),
            f"{stage.epochs:g}",
            "-" if stage.steps is None else f"{stage.steps:,}",
            fmt_flops(stage.flops),
            fmt_seconds(stage.seconds),
            "" if stage.paper_seconds is None else fmt_seconds(stage.paper_seconds),
        ]
    )


def _total_row(label: str, stages: list[Stage]) -> str:
    paper = [s.paper_seconds for s in stages if s.paper_seconds is not None]
    cells = ["", label, "", "", "", "", ""]
    cells.append(total_cell(stages, "flops", fmt_flops))
    cells.append(total_cell(stages, "seconds", fmt_seconds))
    cells.append(fmt_seconds(sum(paper)) if paper else "")
    return _row(cells)


def _header(plan: Plan) -> list[str]:
    hw = plan.hardware
    n = plan.n_params
    params = fmt_count(n.value)
    return [
        f"Dry run of {plan.name}: nothing is loaded, generated or trained.",
        f"  model     {plan.model}: {params} parameters ({n.source})",
        f"  data      {fmt_int(plan.n_train.value)} train prompts ({plan.n_train.source})",
        f"  builds    {plan.chain}",
        f"  batch     {plan.global_batch} pairs per optimizer step (trainer.batch_size x "
        f"grad_accumulation x world_size)",
        f"  hardware  {plan.devices} x {hw.name}: {hw.description}, {hw.peak_flops / 1e12:g} "
        f"TFLOP/s peak at {hw.utilisation:.0%} = {hw.sustained_flops / 1e12:.3g} TFLOP/s "
        f"sustained, {hw.bandwidth / 1e9:,.0f} GB/s memory",
    ]


def fmt_int(value: float | None) -> str:
    return "unknown" if value is None else f"{int(value):,}"


def _table(plan: Plan) -> list[str]:
    lines = [_row([name for name, _ in COLUMNS]), _row(["-" * w for _, w in COLUMNS])]
    for stage in plan.stages:
        lines.append(_stage_row(stage))
        if stage.iteration is not None and stage is plan.stages_of(stage.iteration)[-1]:
            lines.append(
                _total_row(f"iteration {stage.iteration}", plan.stages_of(stage.iteration))
            )
    lines.append(_row(["-" * w for _, w in COLUMNS]))
    lines.append(_total_row("total", plan.stages))
    return lines


def _task_lines(plan: Plan) -> list[str]:
    if not plan.tasks:
        return ["Evaluation: none (eval.tasks is empty)."]
    lines = ["Evaluation per model (estimates):"]
    for t in plan.tasks:
        gen = f", <= {t.generated_tokens} generated tokens/doc" if t.generated_tokens else ""
        lines.append(
            f"  {t.name:<16} {t.num_fewshot:>2}-shot  {fmt_int(t.docs):>7} docs  "
            f"~{fmt_count(t.tokens):>7} tokens{gen} ({t.source})"
        )
    return lines


def _hardware_lines(plan: Plan) -> list[str]:
    lines = [f"Total time on other hardware ({plan.devices} device(s), same assumptions):"]
    for hw in HARDWARE.values():
        lines.append(
            f"  {hw.name:<5} {fmt_seconds(plan_seconds(plan, hw)):>10}  ({hw.description}: "
            f"{hw.peak_flops / 1e12:g} TFLOP/s peak at {hw.utilisation:.0%}, "
            f"{hw.bandwidth / 1e9:,.0f} GB/s)"
        )
    return lines


def format_plan(plan: Plan) -> str:
    """The plan as the text ``train.py dry_run=true`` prints."""
    lines = [*_header(plan), "", *_table(plan), "", *_task_lines(plan)]
    lines += ["", *_hardware_lines(plan)]
    if any(s.paper_seconds is not None for s in plan.stages):
        lines += [
            "",
            f"paper: the SPIN paper's reported cost on {PAPER_HARDWARE} (zephyr-7b, 50k "
            "prompts, t-1 mixing); its training also runs the reference model every step.",
        ]
    lines += ["", "Assumptions:", *(f"  - {note}" for note in plan.notes)]
    return "\n".join(lines)
