"""Every list of names a setting may take, in one home that imports nothing.

The config's validation (spin/validation.py) reads these lists without importing training,
process or backend code, and the code that acts on a name (the loss registry, the opponents,
the trainer, the generation backends) is keyed by the same lists, so a name cannot be allowed
by one and unknown to the other: tests/test_names.py checks each registry against its list.
"""

from __future__ import annotations

# spin/losses.py registers one function per name; ``loss.name`` and ``baseline.loss``.
LOSSES = ("hinge", "ipo", "iris", "sigmoid", "simpo", "space", "tspin")
# What the docs call a loss that is another one with settings: ``rpo`` is the logistic loss
# with the real response's NLL (conf/loss/rpo.yaml). ``loss.name=rpo`` is accepted and runs
# as ``sigmoid``; validation asks for the NLL weight that makes it rpo.
LOSS_ALIASES = {"rpo": "sigmoid"}
# spin/stages/opponents.py has one function per name (``opponent.name``).
OPPONENTS = ("previous", "fictitious", "kl_mixture")
# ``trainer.optimizer`` -> the Trainer's name for it.
OPTIMIZERS = {"rmsprop": "rmsprop", "adamw": "adamw_torch"}
# ``trainer.precision``: fp32, or autocast to bf16 / fp16 over float32 master weights.
PRECISIONS = ("fp32", "bf16", "fp16")
# ``trainer.distributed``: one process, or a launch of several (spin/distributed.py).
LAUNCHES = ("none", "ddp", "fsdp", "zero3")
# ``baseline.name``: the chain itself (none) or one of the paper's comparisons.
BASELINES = ("none", "sft", "sft_more", "dpo", "spin_dpo")
# ``generation.backend`` (spin/generation.py).
BACKENDS = ("hf", "vllm")
# ``model.source``: built in code, dequantised from a GGUF file, or a directory or hub id.
MODEL_SOURCES = ("tiny", "gguf", "hub")
# ``data.source`` (spin/data/__init__.py).
DATA_SOURCES = ("arith", "jsonl", "hf", "ultrachat", "world")
# ``baseline.preferences.source`` (spin/data/preferences.py).
PREFERENCE_SOURCES = ("arith", "ultrafeedback", "jsonl")
DTYPES = ("float32", "bfloat16", "float16")
LOGGERS = ("wandb", "none")
LOGGER_MODES = ("offline", "online", "disabled")
QUANTIZATIONS = (None, "4bit")
# ``data.difficulty``: the step counts the synthetic arithmetic has problem templates for.
ARITH_STEPS = (1, 2, 3, 4, 5, 6)
