"""Training keeps float32 master weights; the trained model is saved in ``model.dtype``.

An optimizer updates a weight in the weight's own dtype. A bfloat16 weight has 8
significant bits, so an update smaller than half its spacing (about 6e-5 at |w| = 0.02) is
rounded away, and at SPIN's learning rates (5e-7, 1e-7) nearly every update is: 16-bit
weights trained in place barely move. So every parameter that trains is float32, whatever
``model.dtype``, on every launch mode, and ``trainer.precision`` picks only what the forward
and backward passes compute in (the Trainer's autocast). This is what the official code gets
by loading float32 weights and training under ZeRO-3, which keeps a float32 master copy of
its 16-bit weights. Frozen weights (a LoRA base) stay in ``model.dtype``: nothing updates
them.

The trained model is saved in ``model.dtype`` (the official ZeRO-3 config saves 16-bit
weights too), so generation, the reference pass, scoring and the next iteration load every
model of the chain alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel
from transformers.integrations import is_deepspeed_zero3_enabled

from spin.models import DTYPES

MASTER_DTYPE = torch.float32
# The index of a model saved in several safetensors files; its total_size counts bytes.
SHARD_INDEX = "model.safetensors.index.json"
# safetensors' names of the floating-point dtypes, and of the ones model.dtype allows.
FLOATS = ("F64", "F32", "F16", "BF16")
SAFETENSORS_CODES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def keep_fp32_masters(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` with every trainable parameter in float32, changed in place.

    The weights were loaded in ``model.dtype`` first, so training starts from exactly the
    model whose reference log-probabilities the chain computed. Under ZeRO-3 the parameters
    are DeepSpeed's partitioned placeholders, made in DeepSpeed's 16-bit dtype as they load
    whatever dtype they were read in; DeepSpeed keeps their float32 master copy in its
    optimizer, so they are left as they are.
    """
    if is_deepspeed_zero3_enabled():
        return model
    for param in model.parameters():
        if param.requires_grad and param.dtype != MASTER_DTYPE:
            param.data = param.data.to(MASTER_DTYPE)
    return model


def master_weights_spec(cfg: DictConfig) -> dict[str, Any]:
    """What a trained model's artifact key adds: ``master_weights`` for a full fine-tune from
    16-bit weights, which earlier versions trained in place in 16 bits, so such a model is
    never taken from an artifact they built. Nothing for float32 weights (trained as before)
    or for LoRA (peft always kept the adapters in float32), whose keys stay what they were."""
    if cfg.model.dtype == "float32" or cfg.lora.enabled:
        return {}
    return {"master_weights": "float32"}


def cast_saved_model(directory: Path, dtype: str) -> None:
    """Rewrite a saved model's floating-point weights in ``dtype``, one safetensors file at a
    time (a 7B model is never whole in memory), and record ``dtype`` in its config.json.

    Every training path saves through here. The chain's own save casts in memory first, so
    its files are only read for their headers; the Trainer's save under FSDP writes the
    float32 masters, and ZeRO-3's 16-bit save is usually in ``dtype`` already.
    """
    code = SAFETENSORS_CODES[dtype]
    total = 0
    for path in sorted(directory.glob("*.safetensors")):
        entries = _header(path)[1]
        if any(e["dtype"] in FLOATS and e["dtype"] != code for e in entries.values()):
            _rewrite(path, DTYPES[dtype])
            entries = _header(path)[1]
        total += sum(end - start for start, end in (e["data_offsets"] for e in entries.values()))
    _update_json(directory / "config.json", lambda config: config | {"dtype": dtype})
    index = directory / SHARD_INDEX
    if index.is_file():
        sized = {"total_size": total}
        _update_json(index, lambda data: data | {"metadata": data.get("metadata", {}) | sized})


def _rewrite(path: Path, dtype: torch.dtype) -> None:
    """A safetensors file's floating-point tensors in ``dtype``, written beside it and renamed
    over it, so a killed rewrite leaves the file whole."""
    tensors = {k: t.to(dtype) if t.is_floating_point() else t for k, t in load_file(path).items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, partial, metadata=_header(path)[0])
    partial.replace(path)


def _header(path: Path) -> tuple[dict[str, str] | None, dict[str, dict[str, Any]]]:
    """A safetensors file's metadata and tensor entries (dtype, shape, byte offsets), read
    from its header alone: 8 bytes giving the header's length, then the header as JSON."""
    with path.open("rb") as file:
        length = int.from_bytes(file.read(8), "little")
        entries = json.loads(file.read(length))
    return entries.pop("__metadata__", None), entries


def _update_json(path: Path, change: Any) -> None:
    """Apply ``change`` to a JSON file, rewriting it (as transformers writes its files) only
    when that changes something."""
    data = json.loads(path.read_text())
    changed = change(data)
    if changed != data:
        path.write_text(json.dumps(changed, indent=2, sort_keys=True) + "\n")
