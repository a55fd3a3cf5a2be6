"""The stages a config would build, with their sizes, optimizer steps, FLOPs and time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from omegaconf import DictConfig

from evaluation.plan import plan_tasks
from spin.config import given_pairs_config, iteration_settings
from spin.planning.evalcost import CHARS_PER_TOKEN, TaskEstimate, estimate_task
from spin.planning.hardware import (
    BYTES_PER_PARAM,
    HARDWARE,
    PAPER_GENERATION_S,
    PAPER_MODEL,
    PAPER_TRAIN_S,
    Hardware,
)
from spin.planning.memory import MemoryPlan, memory_plan
from spin.planning.sizes import (
    Count,
    global_batch,
    local_splits,
    model_size,
    optimizer_steps,
    pair_tokens,
    preference_count,
    sft_size,
    train_size,
)


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
    # Per-device memory of each kind of stage; None when the model's size is unknown.
    memory: MemoryPlan | None = None

    def iterations(self) -> list[int]:
        return sorted({s.iteration for s in self.stages if s.iteration is not None})

    def stages_of(self, iteration: int | None) -> list[Stage]:
        return [s for s in self.stages if s.iteration == iteration]


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
        # LoRA computes no gradients of the frozen weights: forward 2, input gradients 2.
        self.add(replace(stage, tokens=tokens, steps=steps), 4 if self.cfg.lora.enabled else 6)

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
        if given_pairs_config(self.cfg, t) is None:  # given pairs are read, not generated
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
        memory=memory_plan(cfg, builder.n_params, hardware),
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
        "trained token (4 x with LoRA: no gradients of the frozen weights), times epochs; "
        "attention's own FLOPs and gradient checkpointing's "
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
    if cfg.eval.exact:
        notes.append(
            "eval.exact=true: every model is also scored on the exact world's measures, one "
            "loglikelihood request per response of the language per test and training prompt "
            "(not in the estimates)."
        )
    return notes
