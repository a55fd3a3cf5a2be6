"""Training a model from its parent: the pairwise (SPIN or DPO) run the chain and the DPO
baselines train, and the helpers every training build shares with the SFT stage
(spin/stages/start.py): its settings and key, checkpoints to resume from, the save."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spin import distributed
from spin.artifacts import Artifact, read_json, write_json
from spin.lora import lora_spec, merge_adapters
from spin.losses import canonical_loss, is_reference_free
from spin.models import DTYPES
from spin.pairs import ReferenceMix, mixed_reference
from spin.precision import cast_saved_model, master_weights_spec
from spin.stages.context import Context, section
from spin.stages.loading import ModelRef
from spin.trainer import last_checkpoint, train_pairs, training_arguments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Objective:
    """What one pairwise training run optimises: a SPIN iteration or a DPO baseline."""

    loss: str
    beta: float
    nll_weight: float
    label_smoothing: float
    lr: float
    epochs: float
    # The loss variant's own settings (spin.losses.variant_settings), e.g. SPACE's mu.
    settings: dict[str, Any] = field(default_factory=dict)


def train(
    ctx: Context, model: ModelRef, refs: ReferenceMix, objective: Objective, stage: str
) -> tuple[ModelRef, Artifact]:
    """Train from ``model`` on the pairs of ``refs`` (their reference log-probabilities
    mixed by weight) with a pairwise loss; a reference-free loss's ``refs`` is its encoded
    pairs alone, which its key names as ``pairs``."""
    loss = {
        "name": canonical_loss(objective.loss),
        "beta": objective.beta,
        "nll_weight": objective.nll_weight,
        "label_smoothing": objective.label_smoothing,
    } | objective.settings
    seed = ctx.seeded(ctx.cfg.trainer.seed)
    trainer = trainer_settings(ctx.cfg, objective.lr, objective.epochs, seed=seed)
    single = len(refs) == 1 and refs[0][1] == 1.0
    reference = refs[0][0].key if single else [[ref.key, weight] for ref, weight in refs]
    spec = {
        "parent": model.key,
        "pairs" if is_reference_free(objective.loss) else "reference": reference,
        "loss": loss,
        "trainer": trainer_key(trainer),
    }
    spec |= weights_spec(ctx.cfg)

    def build(work: Path) -> None:
        args = arguments(ctx.cfg, work, trainer)
        policy, tokenizer = ctx.models.load_private(model, seed)
        log.info("%s: training with loss %s", stage, loss_label(objective))
        history = train_pairs(
            policy,
            tokenizer,
            mixed_reference(refs),
            args,
            loss_name=objective.loss,
            beta=objective.beta,
            label_smoothing=objective.label_smoothing,
            nll_weight=objective.nll_weight,
            loss_settings=objective.settings,
            resume_from=resume_point(work),
            save_to=trainer_saves(ctx.cfg, work),
        )
        tokens = read_json(refs[0][0].path / "stats.json")["tokens"] * objective.epochs
        finish_training(ctx.cfg, work, policy, tokenizer, model, history, tokens)

    artifact = ctx.artifact("model", spec, build, together=True)
    return ModelRef(artifact.key, str(artifact.path / "model")), artifact


def loss_label(objective: Objective) -> str:
    """The loss as the user chose it (``rpo``, not the ``sigmoid`` it runs as), with the
    NLL term's weight when there is one."""
    nll = f" (NLL weight {objective.nll_weight:g})" if objective.nll_weight else ""
    return f"{objective.loss}{nll}"


def trainer_settings(cfg: DictConfig, lr: float, epochs: float, **overrides: Any) -> dict[str, Any]:
    """The settings of a training run: not the ones that leave its weights as they are
    (reference batch size, process count and engine, checkpoint interval). The start
    model's SFT keeps ``trainer.seed``; later runs pass it moved by the run's ``seed``."""
    drop = ("ref_batch_size", "world_size", "save_steps", "distributed")
    trainer = section(cfg, "trainer", drop=drop)["trainer"]
    return trainer | {"lr": lr, "epochs": epochs} | overrides


def trainer_key(trainer: dict[str, Any]) -> dict[str, Any]:
    """The settings a trained model's key holds: ``batch_size`` as the global batch
    (examples of one optimizer step over every process and accumulated micro-batch), so
    N processes of batch b, or one accumulating N micro-batches of b, share the model of
    one process of batch N x b: each step trains on the same examples
    (spin/trainer.py), only the rounding differs."""
    step = trainer["batch_size"] * trainer["grad_accumulation"] * distributed.world_size()
    key = trainer | {"batch_size": step, "grad_accumulation": 1}
    if key["group_by_length"]:
        del key["group_by_length"]  # the default, absent from keys made before it existed
    return key


def weights_spec(cfg: DictConfig) -> dict[str, Any]:
    """What a trained model's key adds about which weights train and how: the adapters
    (nothing without LoRA) and, where it changed training, the float32 master weights."""
    return lora_spec(cfg) | master_weights_spec(cfg)


def arguments(cfg: DictConfig, work: Path, trainer: dict[str, Any]) -> Any:
    """Arguments of a training build: its checkpoints go into ``work/checkpoints``, where
    a rerun after a kill finds them."""
    return training_arguments(
        str(work / "checkpoints"), **trainer, save_steps=cfg.trainer.save_steps
    )


def resume_point(work: Path) -> Path | None:
    """The checkpoint a training build resumes from, chosen (and incomplete ones
    deleted) by the main process alone."""
    found = last_checkpoint(work / "checkpoints") if distributed.is_main() else None
    return distributed.broadcast(found)


def trainer_saves(cfg: DictConfig, work: Path) -> Path | None:
    """Where the Trainer itself saves the model: only when FSDP or ZeRO-3 split the
    weights over the processes, which it gathers; otherwise :func:`finish_training` does."""
    return work / "model" if distributed.shards_weights(cfg) else None


def finish_training(
    cfg: DictConfig,
    work: Path,
    policy: Any,
    tokenizer: Any,
    parent: ModelRef,
    history: list[dict],
    tokens: float,
) -> None:
    """After every process has trained: the main process merges LoRA adapters and
    saves the model in ``model.dtype`` (trained as float32 masters: spin/precision.py),
    its history and statistics."""
    distributed.barrier()
    if not distributed.is_main():
        return
    if not distributed.shards_weights(cfg):
        policy = merge_adapters(policy, parent.location, work / "adapter", cfg)
        # Cast before saving, so the float32 masters are not written only to be rewritten.
        policy.to(DTYPES[cfg.model.dtype]).save_pretrained(work / "model")
        tokenizer.save_pretrained(work / "model")
    # The Trainer's own save (FSDP, ZeRO-3) writes what it holds: cast it on disk.
    cast_saved_model(work / "model", cfg.model.dtype)
    write_json(work / "history.json", history)
    write_json(work / "stats.json", {"tokens_trained": int(tokens)})
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
