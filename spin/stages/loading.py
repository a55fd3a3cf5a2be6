"""A model of the chain (:class:`ModelRef`) and the one kept in memory (:class:`ModelCache`):
consecutive stages on the same model share one load, and a stage that needs its own copy
(training) or another form of it (vLLM, QLoRA's 4-bit reference) frees the shared one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from spin.lora import load_quantized, quantized, trainable_model
from spin.models import load_model, load_tokenizer
from spin.precision import keep_fp32_masters


@dataclass(frozen=True)
class ModelRef:
    """A model of the chain: its provenance key and where its weights are."""

    key: str
    location: str


class ModelCache:
    """Loads the models of one job in ``model.dtype``, keeping the last one in memory."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self._loaded: tuple[str, Any, Any] | None = None

    def load(self, ref: ModelRef) -> tuple[Any, Any]:
        """A model and its tokenizer, shared with the stage before when it used the same."""
        if self._loaded is None or self._loaded[0] != ref.key:
            self._loaded = None
            model, tokenizer = self._load_fresh(ref)
            self._loaded = (ref.key, model, tokenizer)
        return self._loaded[1], self._loaded[2]

    def load_private(self, ref: ModelRef, seed: int) -> tuple[Any, Any]:
        """A copy to train: training mutates the weights, so the cached one is freed; with
        ``lora.enabled``, in fresh adapters (spin/lora.py) drawn from ``seed``, the training
        run's. Loaded in ``model.dtype`` like every model of the chain, its trainable weights
        then become float32 master weights (spin/precision.py)."""
        self._loaded = None
        if self.cfg.lora.enabled:
            torch.manual_seed(seed)
            model, tokenizer = trainable_model(ref.location, self.cfg)
        else:
            model, tokenizer = self._load_fresh(ref)
        return keep_fp32_masters(model), tokenizer

    def load_generator(self, ref: ModelRef) -> tuple[Any, Any]:
        """What generation runs on, and the tokenizer: the loaded model for the ``hf``
        backend; for ``vllm`` the model's location, since vLLM loads the weights itself and
        a second copy in the accelerator's memory would take what its KV cache needs."""
        if self.cfg.generation.backend != "vllm":
            return self.load(ref)
        self._loaded = None
        cfg = self.cfg.model
        return ref.location, load_tokenizer(ref.location, cfg.trust_remote_code, cfg.revision)

    def load_reference(self, ref: ModelRef) -> tuple[Any, Any]:
        """The frozen model of a reference pass: the model itself, or under QLoRA the 4-bit
        copy its adapters train on, so the reference is the policy without its adapters."""
        if not quantized(self.cfg):
            return self.load(ref)
        self._loaded = None
        return load_quantized(ref.location, self.cfg.model, self.cfg.lora.quantize)

    def _load_fresh(self, ref: ModelRef) -> tuple[Any, Any]:
        cfg = self.cfg.model
        return load_model(ref.location, cfg.dtype, cfg.trust_remote_code, cfg.revision)
