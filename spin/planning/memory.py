"""Peak accelerator memory per device of each kind of stage, and what makes training fit.

A 7B model that does not fit is found out minutes into a job on a GPU node, after the queue
and the checkpoint download; the dry run says it up front. These are estimates from the
config alone: they count the tensors a stage must hold at its peak, per device, and leave
out what is small or depends on kernels and drivers (the CUDA context, the allocator's
fragmentation, communication buffers), for which :data:`USABLE` keeps a tenth of the device
free. Sizes are upper bounds where the plan's are (every sequence at its longest).

Assumptions, stage by stage (bytes of one parameter: ``model.dtype``, but 4 for the
parameters training updates; of an activation: 2 where ``trainer.precision`` is bf16/fp16
or the pass runs on 16-bit weights, else 4):

- generation (HF backend): the weights, the key/value cache of ``generation.batch_size``
  sequences of ``model.max_prompt_length + generation.max_new_tokens`` tokens (two vectors
  of the key/value width per layer per token, in the weights' dtype), and one layer's
  activations over the prompts while they are read in.
- reference pass: the weights (their 4-bit copy under QLoRA), one layer's activations over
  ``trainer.ref_batch_size`` packed pairs (nothing is kept for a backward pass), and the
  logits of every position at the pairs' full length.
- training: weights, gradients and optimizer states of the trained parameters, the
  activations kept for the backward pass and the logits, for ``trainer.batch_size`` pairs
  per device:

  * the optimizer keeps 1 state per trained parameter (RMSprop without momentum, the
    Trainer's ``rmsprop``) or 2 (AdamW);
  * the weights that train are float32 master weights whatever ``model.dtype``
    (spin/precision.py), with float32 gradients and states: 4 + 4 + 4 x states bytes per
    parameter;
  * one process per device (``trainer.distributed`` none or ddp) under a 16-bit
    ``trainer.precision``: autocast also holds a 16-bit copy of every matrix the forward
    multiplies by (the decoder's linear layers and the output head) from the forward until
    the backward (2 bytes each, counted with the weights);
  * ``fsdp`` shards the masters, gradients and states over ``trainer.world_size`` devices;
    ``zero3`` (DeepSpeed ZeRO-3) holds the weights and gradients in the compute dtype and,
    when that is 16-bit, a float32 master copy beside the float32 states (2 + 2 + 4 + 4 x
    states bytes per parameter, the ZeRO paper's accounting), all sharded; both gather the
    layer being computed and prefetch the next in the compute dtype (two of the largest of
    a decoder layer and the embedding);
  * LoRA adapters (peft casts them to float32) are the only trained parameters: float32
    gradients and states for them alone, the base weights frozen in ``model.dtype`` (QLoRA:
    the decoder's linear layers in 4-bit NF4 with double quantization, about 0.52 bytes a
    parameter; embeddings, norms and output head in ``model.dtype``);
  * activations kept per token and layer of a Llama/Mistral decoder with memory-efficient
    attention (no attention matrix is stored): 7 x hidden + 2 x key/value width + 4 x MLP
    width values (the inputs of the two norms and of every projection, queries, keys,
    values, the attention output and the four MLP tensors); LoRA with dropout adds a copy
    of each adapted projection's input. Gradient checkpointing keeps each layer's input
    only and recomputes one layer at a time;
  * logits: every position of the packed pairs (an upper bound: the loss projects only
    response tokens), as 16-bit logits, a float32 copy and one float32 temporary (the
    log-softmax, or its gradient) per vocabulary entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spin.planning.hardware import BYTES_PER_PARAM, Hardware
from spin.planning.sizes import Count, pair_tokens

# Share of a device's memory a stage may plan to use; the rest is for the CUDA context,
# fragmentation of the caching allocator and communication buffers.
USABLE = 0.9
# Optimizer states per trained parameter.
OPTIMIZER_STATES = {"rmsprop": 1, "adamw": 2}
# NF4 with double quantization: 4 bits a weight plus about 0.127 bits of quantization
# constants (QLoRA paper, section 2).
NF4_BYTES = (4 + 0.127) / 8
# Bytes per logit: a 16-bit (or float32) logit, its float32 copy, one float32 temporary.
LOGIT_EXTRA_BYTES = 8
# Sharded modes in the order they are tried: ZeRO-3 first, as the paper trained.
SHARDED = ("zero3", "fsdp")
DISTRIBUTED_WORDS = {
    "none": "unsharded",
    "ddp": "DDP, unsharded",
    "fsdp": "FSDP over {n}",
    "zero3": "ZeRO-3 over {n}",
}


@dataclass(frozen=True)
class Architecture:
    """The shape of a Llama/Mistral-style decoder: what activations and caches scale with."""

    layers: int
    hidden: int
    kv_width: int  # key/value heads x head size (smaller than hidden under grouped queries)
    intermediate: int  # MLP width (gated: gate, up and down projections)
    vocab: int
    tied_embeddings: bool
    source: str = ""

    def projections(self) -> dict[str, tuple[int, int]]:
        """Input and output width of every linear layer of one decoder layer."""
        h, kv, i = self.hidden, self.kv_width, self.intermediate
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder's linear layers (what QLoRA quantizes)."""
        return self.layers * sum(a * b for a, b in self.projections().values())

    @property
    def layer_params(self) -> int:
        return self.linear_params // self.layers + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        heads = 1 if self.tied_embeddings else 2
        return self.layers * self.layer_params + heads * self.embedding_params + self.hidden

    def adapted(self, targets: list[str]) -> list[tuple[int, int]]:
        """Shapes of the projections LoRA adapts (``all-linear``: every one)."""
        shapes = self.projections()
        names = list(shapes) if targets == ["all-linear"] else [t for t in targets if t in shapes]
        return [shapes[name] for name in names]

    def adapter_params(self, r: int, targets: list[str]) -> int:
        """LoRA parameters: r x (input + output width) per adapted projection and layer."""
        return self.layers * sum(r * (a + b) for a, b in self.adapted(targets))

    @property
    def activation_values(self) -> int:
        """Values kept per token and layer for the backward pass (see the module doc)."""
        return 7 * self.hidden + 2 * self.kv_width + 4 * self.intermediate

    @property
    def kv_values(self) -> int:
        """Key/value cache values per token, over all layers."""
        return 2 * self.layers * self.kv_width


# Architectures of the project's model configs that are not read from disk offline.
KNOWN = {
    "zephyr-7b-sft-full": Architecture(32, 4096, 1024, 14336, 32000, False, "Mistral-7B"),
    "smollm2-135m": Architecture(30, 576, 192, 1536, 49152, True, "SmolLM2-135M"),
}


def from_hf_config(config: dict[str, Any], source: str) -> Architecture:
    """The shape of a transformers config (Llama, Mistral, Qwen2 and alike)."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return Architecture(
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        kv_width=config.get("num_key_value_heads", heads) * head_dim,
        intermediate=config["intermediate_size"],
        vocab=config["vocab_size"],
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        source=source,
    )


def estimated(n_params: float) -> Architecture:
    """A Llama-like shape for ``n_params``: 128 hidden units per layer, MLP 8/3 hidden, no
    grouped queries (the largest key/value cache), a 32k vocabulary; solved for the width."""

    def total(h: float) -> float:
        return (h / 128) * 12 * h * h + 2 * 32000 * h

    low, high = 64.0, 65536.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if total(mid) < n_params else (low, mid)
    hidden = max(64, round(low / 64) * 64)
    return Architecture(
        layers=max(1, round(hidden / 128)),
        hidden=hidden,
        kv_width=hidden,
        intermediate=round(hidden * 8 / 3 / 64) * 64,
        vocab=32000,
        tied_embeddings=False,
        source="estimated from model.n_params (a Llama-like shape)",
    )


def architecture(cfg: DictConfig, n_params: Count) -> Architecture | None:
    """The model's shape, offline: a local checkpoint's config.json, the tiny model's config,
    the table of known models, or an estimate from ``model.n_params``."""
    model = cfg.model
    local = Path(model.path) / "config.json" if model.path else None
    if local is not None and local.is_file():
        return from_hf_config(json.loads(local.read_text()), f"read from {local}")
    if model.source == "tiny":
        from spin.models import build_tiny

        return from_hf_config(build_tiny(model.seed)[0].config.to_dict(), "the tiny model")
    if model.name in KNOWN:
        known = KNOWN[model.name]
        return replace(known, source=f"{known.source}, known shape of model {model.name}")
    if n_params.value is not None:
        return estimated(n_params.value)
    return None


@dataclass(frozen=True)
class TrainSetup:
    """One way to run a training stage: its parallelism, checkpointing and adapters."""

    distributed: str  # none | ddp | fsdp | zero3
    checkpointing: bool
    adapters: str | None  # None (full fine-tuning) | lora | qlora

    def describe(self, devices: int) -> str:
        mode = DISTRIBUTED_WORDS[self.distributed].format(n=devices)
        what = {None: "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}[self.adapters]
        ckpt = "gradient checkpointing" if self.checkpointing else "no checkpointing"
        return f"{mode}, {ckpt}, {what}"

    def overrides(self, configured: TrainSetup) -> str:
        """The command-line settings that turn ``configured`` into this setup."""
        changes = []
        if self.checkpointing != configured.checkpointing:
            changes.append(f"trainer.gradient_checkpointing={str(self.checkpointing).lower()}")
        if self.distributed != configured.distributed:
            changes.append(f"trainer.distributed={self.distributed}")
        if self.adapters != configured.adapters:
            changes.append(f"lora={self.adapters or 'none'}")
        return " ".join(changes)


@dataclass(frozen=True)
class Estimate:
    """Bytes one device holds at a stage's peak, by what holds them."""

    stage: str
    setting: str
    parts: dict[str, float]
    capacity: float  # bytes of one device

    @property
    def peak(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.peak <= USABLE * self.capacity


@dataclass(frozen=True)
class Option:
    """A training setup tried for the plan, with its estimate."""

    setup: TrainSetup
    estimate: Estimate
    overrides: str


@dataclass(frozen=True)
class MemoryPlan:
    """Per-device peaks of generation, the reference pass and training as configured, and
    the training setups tried, in order, until one fits."""

    hardware: Hardware
    devices: int
    architecture: Architecture
    n_params: float
    stages: list[Estimate]
    options: list[Option]
    recommendation: str
    notes: list[str]


class _Sizes:
    """Byte counts of one config: the model, its dtypes, the per-device workloads."""

    def __init__(self, cfg: DictConfig, arch: Architecture, n_params: float) -> None:
        self.cfg = cfg
        self.arch = arch
        self.n = n_params
        self.weight_bytes = BYTES_PER_PARAM[cfg.model.dtype]
        mixed = cfg.trainer.precision in ("bf16", "fp16")
        self.act_bytes = 2 if mixed or self.weight_bytes == 2 else 4
        # What a full fine-tune computes in: its float32 masters, or autocast's 16 bits.
        self.compute_bytes = 2 if mixed else 4
        self.states = OPTIMIZER_STATES[cfg.trainer.optimizer]
        self.pair_tokens = pair_tokens(cfg)

    def logits(self, tokens: float, value_bytes: int | None = None) -> float:
        value_bytes = self.act_bytes if value_bytes is None else value_bytes
        return tokens * self.arch.vocab * (value_bytes + LOGIT_EXTRA_BYTES)

    def one_layer(self, tokens: float, value_bytes: int) -> float:
        return tokens * self.arch.activation_values * value_bytes

    def frozen_weights(self, adapters: str | None) -> float:
        """Bytes of the weights a pass holds: 4-bit linear layers under QLoRA."""
        if adapters != "qlora":
            return self.n * self.weight_bytes
        linear = min(self.arch.linear_params, self.n)
        return linear * NF4_BYTES + (self.n - linear) * self.weight_bytes

    def adapter_params(self) -> int:
        lora = self.cfg.lora
        return self.arch.adapter_params(lora.r, list(lora.target_modules))

    def generation(self, capacity: float) -> Estimate:
        gen, model = self.cfg.generation, self.cfg.model
        sequences = gen.batch_size
        length = model.max_prompt_length + gen.max_new_tokens
        cache = sequences * length * self.arch.kv_values * self.weight_bytes
        prefill = self.one_layer(sequences * model.max_prompt_length, self.weight_bytes)
        parts = {"weights": self.n * self.weight_bytes, "kv_cache": cache, "working": prefill}
        setting = (
            f"{model.dtype} weights, key/value cache of {sequences} sequences x {length:,} tokens"
        )
        return Estimate("generation", setting, parts, capacity)

    def reference(self, capacity: float) -> Estimate:
        adapters = self._adapters()
        pairs = self.cfg.trainer.ref_batch_size
        tokens = pairs * self.pair_tokens
        parts = {
            "weights": self.frozen_weights(adapters if adapters == "qlora" else None),
            "working": self.one_layer(tokens, self.act_bytes),
            "logits": self.logits(tokens),
        }
        base = "4-bit" if adapters == "qlora" else self.cfg.model.dtype
        setting = f"{base} weights, forward of {pairs} pairs x {self.pair_tokens:,} tokens"
        return Estimate("reference", setting, parts, capacity)

    def training(self, setup: TrainSetup, devices: int, capacity: float) -> Estimate:
        batch = self.cfg.trainer.batch_size
        tokens = batch * self.pair_tokens
        # A full fine-tune computes from float32 masters; adapters on the model.dtype base.
        value_bytes = self.compute_bytes if setup.adapters is None else self.act_bytes
        parts = {
            **self._parameter_memory(setup, devices),
            "activations": self._activations(setup, tokens, value_bytes),
            "logits": self.logits(tokens, value_bytes),
        }
        if setup.distributed in SHARDED:
            largest = max(self.arch.layer_params, self.arch.embedding_params)
            parts["gathered"] = 2 * largest * self.compute_bytes
        setting = f"{setup.describe(devices)}; {batch} pairs x {self.pair_tokens:,} tokens"
        return Estimate("train", setting, parts, capacity)

    def _parameter_memory(self, setup: TrainSetup, devices: int) -> dict[str, float]:
        """Weights, gradients and optimizer states per device (see the module doc)."""
        if setup.adapters is not None:
            adapters = self.adapter_params()
            weights = self.frozen_weights(setup.adapters) + 4 * adapters
            grads, optimizer = 4.0 * adapters, 4.0 * adapters * self.states
        elif setup.distributed == "zero3":
            weights = grads = self.n * self.compute_bytes
            master = 4 if self.compute_bytes == 2 else 0
            optimizer = self.n * (master + 4 * self.states)
        else:
            weights = grads = self.n * 4.0
            optimizer = self.n * 4.0 * self.states
        share = devices if setup.distributed in SHARDED else 1
        return {
            "weights": weights / share + self._autocast_copies(setup),
            "gradients": grads / share,
            "optimizer": optimizer / share,
        }

    def _autocast_copies(self, setup: TrainSetup) -> float:
        """Bytes of autocast's 16-bit copies of the float32 masters of an unsharded full
        fine-tune: every matrix the forward multiplies by (linear layers, output head)."""
        if setup.adapters is not None or setup.distributed in SHARDED or self.compute_bytes == 4:
            return 0.0
        return 2.0 * min(self.arch.linear_params + self.arch.embedding_params, self.n)

    def _activations(self, setup: TrainSetup, tokens: float, value_bytes: int) -> float:
        per_layer = self.arch.activation_values
        if setup.adapters is not None and self.cfg.lora.dropout > 0:
            per_layer += sum(a for a, _ in self.arch.adapted(list(self.cfg.lora.target_modules)))
        if not setup.checkpointing:
            return tokens * self.arch.layers * per_layer * value_bytes
        inputs = tokens * self.arch.layers * self.arch.hidden * value_bytes
        return inputs + tokens * per_layer * value_bytes

    def _adapters(self) -> str | None:
        lora = self.cfg.lora
        if not lora.enabled:
            return None
        return "qlora" if lora.quantize else "lora"

    def configured(self) -> TrainSetup:
        return TrainSetup(
            self.cfg.trainer.get("distributed", "none"),
            bool(self.cfg.trainer.gradient_checkpointing),
            self._adapters(),
        )


def candidates(configured: TrainSetup, devices: int) -> list[TrainSetup]:
    """Training setups to try, the configured one first, then in the order of what they
    change: checkpointing (only compute), sharding (only communication, and only over
    several devices), adapters (what is trained, so results differ; unsharded, the
    distributed setups take no adapters)."""
    ckpt = replace(configured, checkpointing=True)
    found = [configured, ckpt]
    if devices > 1 and configured.adapters is None:
        found += [replace(ckpt, distributed=mode) for mode in SHARDED]
    unsharded = configured.distributed if configured.distributed not in SHARDED else "ddp"
    for adapters in ("lora", "qlora"):
        found.append(TrainSetup(unsharded, True, adapters))
    order = [None, "lora", "qlora"]
    kept = [s for s in found if order.index(s.adapters) >= order.index(configured.adapters)]
    return list(dict.fromkeys(kept))


def devices_for(sizes: _Sizes, setup: TrainSetup, capacity: float, limit: int = 1024) -> int | None:
    """The fewest devices over which a sharded ``setup`` fits, if any up to ``limit``."""
    devices = 1
    while devices <= limit:
        if sizes.training(setup, devices, capacity).fits:
            return devices
        devices *= 2
    return None


def memory_plan(cfg: DictConfig, n_params: Count, hardware: Hardware) -> MemoryPlan | None:
    """The memory plan of ``cfg`` on ``trainer.world_size`` devices of ``hardware``; None
    when the model's size is unknown (no ``model.n_params`` and no known shape)."""
    arch = architecture(cfg, n_params)
    if arch is None:
        return None
    n = n_params.value if n_params.value is not None else float(arch.params)
    sizes = _Sizes(cfg, arch, n)
    devices = cfg.trainer.world_size
    capacity = hardware.memory
    configured = sizes.configured()
    options = []
    for setup in candidates(configured, devices):
        estimate = sizes.training(setup, devices, capacity)
        options.append(Option(setup, estimate, setup.overrides(configured)))
        if estimate.fits:
            break
    stages = [sizes.generation(capacity), sizes.reference(capacity), options[0].estimate]
    return MemoryPlan(
        hardware=hardware,
        devices=devices,
        architecture=arch,
        n_params=n,
        stages=stages,
        options=options,
        recommendation=_recommendation(sizes, options, devices, capacity),
        notes=_notes(cfg, sizes, configured),
    )


def _recommendation(sizes: _Sizes, options: list[Option], devices: int, capacity: float) -> str:
    """What to run training with, in words and overrides."""
    first = options[0]
    if first.estimate.fits:
        return "training fits as configured."
    chosen = next((o for o in options if o.estimate.fits), None)
    if chosen is not None:
        return (
            f"training does not fit as configured; the first setup that fits is "
            f"{chosen.setup.describe(devices)}: {chosen.overrides}"
        )
    zero3 = TrainSetup("zero3", True, None)
    needed = devices_for(sizes, zero3, capacity)
    more = f"; ZeRO-3 with checkpointing fits from {needed} devices" if needed else ""
    return (
        "training fits in none of these setups: lower trainer.batch_size (raising "
        f"trainer.grad_accumulation keeps the global batch) or use more devices{more}."
    )


def _notes(cfg: DictConfig, sizes: _Sizes, configured: TrainSetup) -> list[str]:
    """Warnings that go with the numbers."""
    notes = []
    if configured.adapters is None and sizes.weight_bytes == 2:
        notes.append(
            f"training keeps float32 master weights, gradients and optimizer states for the "
            f"{cfg.model.dtype} model ({cfg.model.dtype} weights updated in place would round "
            f"most steps at trainer.lr={cfg.trainer.lr:g} away), computes in "
            f"trainer.precision={cfg.trainer.precision} and saves the model in "
            f"{cfg.model.dtype}."
        )
    if cfg.generation.backend == "vllm":
        notes.append(
            "generation.backend=vllm: vLLM reserves most of the device for itself and sizes "
            "its key/value cache to fill it; the generation row is what the HF backend needs."
        )
    return notes
