"""LoRA and QLoRA training through peft (``lora.enabled``).

A training stage starting from model M adds fresh adapters to M and trains only them. Its
reference log-probabilities were computed beforehand on M itself (spin/stages/reference.py), and M
is exactly the adapted model with its adapters disabled, so no second model is needed and
the reference is the adapter-free policy. Under QLoRA the adapters sit on a 4-bit copy of M,
and the reference pass runs on that same copy (:func:`reference_spec`), so the equality holds
there too.

At the end of a stage the adapters are merged into M's full-precision weights and the merged
model is saved as an ordinary model, so generation, scoring and the next iteration load it
as they load any other; the next stage adds new adapters on it. Stacking the adapters of
successive iterations instead would give the same function up to rounding (an adapter is a
low-rank update added to the weights it sits on), so the chain always merges and every
model of the chain stays an ordinary full-precision model. Under QLoRA the two differ by a
quantization error: after a merge the next stage quantizes the merged weights afresh, where
stacking would keep the first 4-bit base under frozen earlier adapters. The adapter alone is
saved beside the merged model (``<artifact>/adapter``) for users.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from spin.errors import ConfigError
from spin.models import DTYPES, default_device, hub_revision, load_model, load_tokenizer

# peft's name for "every linear layer but the output head".
ALL_LINEAR = "all-linear"


def lora_spec(cfg: DictConfig) -> dict[str, Any]:
    """The adapter settings a trained model's artifact key holds; nothing when LoRA is off,
    so the keys of fully fine-tuned models stay what they were."""
    lora = cfg.lora
    if not lora.enabled:
        return {}
    return {
        "lora": {
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": list(lora.target_modules),
            "quantize": lora.quantize,
        }
    }


def quantized(cfg: DictConfig) -> bool:
    """Whether training stages adapt a quantized copy of the model (QLoRA)."""
    return bool(cfg.lora.enabled and cfg.lora.quantize)


def reference_spec(cfg: DictConfig) -> dict[str, Any]:
    """What a reference pass's key adds: under QLoRA it runs on the 4-bit copy."""
    return {"quantize": cfg.lora.quantize} if quantized(cfg) else {}


def require_quantization(quantize: str) -> None:
    """Fail with every missing prerequisite of a quantized base named: bitsandbytes and a
    CUDA GPU (its 4-bit kernels run on CUDA only)."""
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes, or .[qlora])")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if missing:
        raise ConfigError(
            f"lora.quantize={quantize!r} (QLoRA) needs {' and '.join(missing)}; "
            "use lora=lora for adapters on the full-precision model"
        )


def load_quantized(
    location: str | Path, model_cfg: DictConfig, quantize: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model at ``location`` (a hub id at ``model.revision``) with its linear layers in
    4-bit NF4 with double quantization (the QLoRA recipe), computing in ``model.dtype``; the
    tokenizer set up as :func:`spin.models.load_model` sets it up."""
    from transformers import BitsAndBytesConfig

    require_quantization(quantize)
    dtype = DTYPES[model_cfg.dtype]
    settings = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        location,
        dtype=dtype,
        quantization_config=settings,
        device_map={"": default_device()},
        trust_remote_code=model_cfg.trust_remote_code,
        revision=hub_revision(location, model_cfg.revision),
    )
    tokenizer = load_tokenizer(location, model_cfg.trust_remote_code, model_cfg.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def add_adapters(model: PreTrainedModel, lora: DictConfig) -> PreTrainedModel:
    """``model`` in fresh LoRA adapters; only the adapters train. A new adapter's second
    matrix is zero, so before the first step the model computes exactly what ``model`` did.
    peft makes the adapters float32 on a 16-bit base (its ``autocast_adapter_dtype``), so
    they train as float32 master weights (spin/precision.py) while the base stays in
    ``model.dtype``."""
    from peft import LoraConfig, get_peft_model

    targets = list(lora.target_modules)
    settings = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, settings)
    except ValueError as err:
        raise ConfigError(
            f"lora.target_modules={targets}: peft cannot add adapters to "
            f"{type(model).__name__} ({err})"
        ) from err


def trainable_model(
    location: str | Path, cfg: DictConfig
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model at ``location`` in fresh adapters, on its 4-bit copy under QLoRA."""
    if quantized(cfg):
        model, tokenizer = load_quantized(location, cfg.model, cfg.lora.quantize)
    else:
        model, tokenizer = load_model(
            location, cfg.model.dtype, cfg.model.trust_remote_code, cfg.model.revision
        )
    return add_adapters(model, cfg.lora), tokenizer


def merge_adapters(
    policy: PreTrainedModel, base_location: str | Path, adapter_dir: Path, cfg: DictConfig
) -> PreTrainedModel:
    """The trained model to save: ``policy`` itself when LoRA is off, else its adapter
    (saved into ``adapter_dir`` first) merged into the base's full-precision weights.

    Under QLoRA the base is loaded again at ``model.dtype`` and the adapter merged there,
    since merging into 4-bit weights would quantize the sum once more.
    """
    if not cfg.lora.enabled:
        return policy
    from peft import PeftModel

    policy.save_pretrained(adapter_dir)
    if not quantized(cfg):
        return policy.merge_and_unload()
    base, _ = load_model(
        base_location, cfg.model.dtype, cfg.model.trust_remote_code, cfg.model.revision
    )
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
