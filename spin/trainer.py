"""SPIN training of one iteration: a ``transformers.Trainer`` with the SPIN loss.

The reference model's log-probabilities are computed once before training
(:func:`spin.logprobs.reference_logps`) and travel with each pair, so only the policy is in
memory. A pair is one packed row (its prompt computed once for both responses) and batches
group pairs of similar length, so little compute goes to padding. Everything else
(optimiser, schedule, mixed precision, gradient accumulation, distributed launch) is the
Trainer's own machinery.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from datasets import Dataset
from torch import Tensor, nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler

from spin.callbacks import FiniteLossTrainer
from spin.logprobs import (
    PAIR_KEYS,
    check_pair_keys,
    pack_pairs,
    packed_length,
    pad_right,
    pair_logps,
    sequence_logps,
)
from spin.losses import LossOutput, call_loss, get_loss
from spin.memory import freed_memory_returned
from spin.names import OPTIMIZERS
from spin.tracking import PAIR_METRICS as METRICS

REF_KEYS = ("ref_real_logps", "ref_generated_logps")
# The third side of a triplet, for an anchored loss (spin.losses.ANCHORED): iteration 0's
# generation of the pair's prompt.
ANCHOR_KEYS = ("anchor_input_ids", "anchor_response_mask")
# The per-pair packed length the length-grouped sampler reads.
LENGTH_COLUMN = "length"
# trainer.save_steps=0 ("auto"): a checkpoint every this fraction of the optimizer steps, so
# a killed run loses at most about a tenth of its training and writes about ten checkpoints.
AUTO_SAVE_FRACTION = 0.1
# Checkpoints kept: the newest may be half written when the process is killed, so the one
# before it is kept too.
CHECKPOINTS_KEPT = 2
# The Trainer's checkpoint folders and the file it writes last into each.
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"

log = logging.getLogger(__name__)


class PairCollator:
    """Pack a batch of B pairs into B rows (:func:`spin.logprobs.pack_pairs`) so the policy
    scores both sides of every pair in one forward pass, the shared prompt once; triplets'
    anchor sides are padded apart (``anchor_*``), for a forward of their own."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, Tensor]:
        batch = pack_pairs(features, self.pad_token_id)
        for key in REF_KEYS:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.float32)
        if ANCHOR_KEYS[0] in features[0]:
            anchors = pad_right(
                [f[ANCHOR_KEYS[0]] for f in features],
                [f[ANCHOR_KEYS[1]] for f in features],
                self.pad_token_id,
            )
            batch |= {f"anchor_{key}": value for key, value in anchors.items()}
        return batch


def with_lengths(dataset: Dataset) -> Dataset:
    """``dataset`` with the packed length of each pair, for the length-grouped sampler."""
    if LENGTH_COLUMN in dataset.column_names:
        return dataset
    return dataset.add_column(LENGTH_COLUMN, [packed_length(pair) for pair in dataset])


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped order drawn from ``seed + epoch`` instead of the global RNG.

    The stock sampler draws each epoch's order from the global torch RNG, whose state when
    a resumed run starts an epoch is not the one the uninterrupted run had (the Trainer
    restores it only after fast-forwarding the data), so a run resumed past its first epoch
    would see its batches in another order. Seeding each epoch by its number gives the same
    order however the run got there; the Trainer's data loader calls ``set_epoch``.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class ResumableOrder(FiniteLossTrainer):
    """A Trainer whose length-grouped batches come from :class:`EpochSeededLengthSampler`,
    so a run resumed from a checkpoint trains on exactly the batches an uninterrupted one
    would; like every Trainer here it stops at the first non-finite loss."""

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> torch.utils.data.Sampler:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        strategy = self.args.train_sampling_strategy
        if (
            strategy not in ("group_by_length", "random")
            or not isinstance(dataset, Dataset)
            or column not in dataset.column_names
        ):
            return super()._get_train_sampler(train_dataset)
        # Equal lengths leave the seeded shuffle as it is: a random order that resumes alike.
        lengths = dataset[column] if strategy == "group_by_length" else [1] * len(dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # Grouped by the global batch: N processes then draw the order one process draws,
        # and the launcher deals its consecutive per-process batches out to them, so a step
        # trains on the same pairs whatever the process count (spin/distributed.py).
        args = self.args
        batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        return EpochSeededLengthSampler(batch, lengths, seed)


class SPINTrainer(ResumableOrder):
    """Trainer whose loss is a registered SPIN loss on precomputed reference log-probs.

    ``nll_weight`` adds the real response's per-token negative log-likelihood (as in
    iterative RPO), which keeps the real answers' likelihood from falling with the generated
    ones'. ``loss_settings`` are the variant's own settings (:func:`spin.losses.variant_settings`).
    """

    # The loss is a mean over the micro-batch's pairs; Trainer divides it for accumulation.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        loss_name: str,
        beta: float,
        label_smoothing: float = 0.0,
        nll_weight: float = 0.0,
        loss_settings: dict | None = None,
        **kwargs,
    ) -> None:
        get_loss(loss_name)  # an unknown name fails here, before any training
        self.loss_name = loss_name
        self.loss_settings = dict(loss_settings or {})
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.nll_weight = nll_weight
        # Per mode ("train"/"eval"): sums of METRICS over pairs, then the pair count.
        self._pending: dict[str, Tensor] = {}
        for key in ("train_dataset", "eval_dataset"):
            if isinstance(kwargs.get(key), Dataset):
                kwargs[key] = with_lengths(kwargs[key])
        super().__init__(*args, **kwargs)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        logps = pair_logps(model, inputs)
        n_pairs = inputs["ref_real_logps"].shape[0]
        policy_real, policy_generated = logps[:n_pairs], logps[n_pairs:]
        # Scored response tokens per sequence: the real responses', then the generated ones'.
        scored = torch.bincount(inputs["score_owner"], minlength=2 * n_pairs)
        real_lengths, generated_lengths = scored[:n_pairs], scored[n_pairs : 2 * n_pairs]
        out = call_loss(
            self.loss_name,
            policy_anchor=anchor_logps(model, inputs),
            policy_real=policy_real,
            policy_generated=policy_generated,
            ref_real=inputs["ref_real_logps"],
            ref_generated=inputs["ref_generated_logps"],
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            real_lengths=real_lengths,
            generated_lengths=generated_lengths,
            **self.loss_settings,
        )
        loss = out.losses.mean()
        if self.nll_weight:
            loss = loss + self.nll_weight * (-policy_real / real_lengths.clamp(min=1)).mean()
        self._record("train" if model.training else "eval", out, policy_real, policy_generated)
        if return_outputs:
            return loss, {
                "policy_real_logps": policy_real,
                "policy_generated_logps": policy_generated,
            }
        return loss

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor, None, None]:
        """Evaluation scores pairs with the SPIN loss; the model's own loss needs labels."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the SPIN metrics gathered since the last log: to the training log (the one
        carrying ``loss``) or to an evaluation's (``<prefix>_loss``)."""
        if "loss" in logs:
            logs.update(self._flush("train", prefix=""))
        else:
            eval_loss = [k for k in logs if k.endswith("_loss") and not k.startswith("train")]
            if eval_loss:
                logs.update(self._flush("eval", prefix=eval_loss[0][: -len("loss")]))
        super().log(logs, start_time)

    def _record(
        self, mode: str, out: LossOutput, policy_real: Tensor, policy_generated: Tensor
    ) -> None:
        values = torch.stack(
            [
                out.rewards_real,
                out.rewards_generated,
                out.rewards_real - out.rewards_generated,
                (out.rewards_real > out.rewards_generated).float(),
                policy_real,
                policy_generated,
            ]
        ).detach()
        count = values.new_tensor([values.shape[1]])
        totals = torch.cat([values.sum(-1), count])
        self._pending[mode] = self._pending[mode] + totals if mode in self._pending else totals

    def _flush(self, mode: str, prefix: str) -> dict[str, float]:
        # Every process calls log() at the same steps, so summing over processes is safe and
        # gives means over all pairs of the global batch.
        totals = self._pending.pop(mode, None)
        if totals is None:
            return {}
        totals = self.accelerator.reduce(totals, reduction="sum")
        means = (totals[:-1] / totals[-1]).tolist()
        return {prefix + name: value for name, value in zip(METRICS, means, strict=True)}


def anchor_logps(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor | None:
    """The policy's log-probabilities of the batch's anchor sides (None without them)."""
    if "anchor_input_ids" not in inputs:
        return None
    return sequence_logps(
        model,
        inputs["anchor_input_ids"],
        inputs["anchor_attention_mask"],
        inputs["anchor_response_mask"],
    )


def training_arguments(
    output_dir: str,
    *,
    lr: float,
    epochs: float,
    batch_size: int,
    grad_accumulation: int,
    optimizer: str,
    lr_scheduler: str,
    warmup_ratio: float,
    weight_decay: float,
    max_grad_norm: float,
    precision: str,
    gradient_checkpointing: bool,
    seed: int,
    logging_steps: int,
    save_steps: int | None = None,
    group_by_length: bool = True,
) -> TrainingArguments:
    """TrainingArguments for one SPIN iteration; ``batch_size`` counts pairs per device.

    ``save_steps`` is how often a checkpoint (weights as safetensors, optimizer, schedule,
    RNG, log history) goes into ``output_dir`` for a killed run to resume from
    (:func:`last_checkpoint`): every that many optimizer steps, 0 for every
    ``AUTO_SAVE_FRACTION`` of the steps, None for no checkpoints. The last
    ``CHECKPOINTS_KEPT`` are kept. Every pair field is kept for the collator
    (``remove_unused_columns=False``). With ``group_by_length`` batches are drawn from
    groups of pairs of similar packed length (the ``length`` column :func:`train_pairs`
    adds): the order is still shuffled by the seed, but a batch pads its rows far less;
    without it the order is a plain seeded shuffle, as the official SPIN code draws it.
    Under DDP every trainable parameter (the whole model, or the adapters of every targeted
    layer) takes part in each forward, so DDP is told not to search the autograd graph for
    unused ones every step. ``precision`` bf16 or fp16 turns on the Trainer's autocast and
    nothing else: the weights it updates must be float32 (the pipeline makes them so,
    spin/precision.py), since 16-bit weights updated in place lose every step below half
    their spacing.
    """
    # The settings were checked where the job started (spin/validation.py); transformers
    # >= 5 has no warmup_ratio: warmup_steps below 1 is a ratio, which is why
    # trainer.warmup_ratio must stay below 1 there.
    return TrainingArguments(
        output_dir=output_dir,
        learning_rate=lr,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accumulation,
        optim=OPTIMIZERS[optimizer],
        lr_scheduler_type=lr_scheduler,
        warmup_steps=warmup_ratio,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=gradient_checkpointing,
        seed=seed,
        logging_steps=logging_steps,
        save_strategy="no" if save_steps is None else "steps",
        save_steps=save_steps or AUTO_SAVE_FRACTION,
        save_total_limit=CHECKPOINTS_KEPT,
        report_to=[],
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )


def train_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict] | Dataset,
    args: TrainingArguments,
    loss_name: str,
    beta: float,
    label_smoothing: float,
    nll_weight: float,
    callbacks: tuple[TrainerCallback, ...] | list[TrainerCallback] = (),
    resume_from: Path | None = None,
    save_to: Path | None = None,
    loss_settings: dict | None = None,
) -> list[dict]:
    """Train ``model`` in place on pairs carrying reference log-probs; returns the log history.

    ``examples`` may be a list of dicts or a ``datasets.Dataset`` (as stored by the pipeline);
    only the pair and reference fields are used. ``resume_from`` is a checkpoint of an
    interrupted run of the same training (:func:`last_checkpoint`) to continue from;
    ``save_to`` where the Trainer saves the model (:func:`run_training`); ``loss_settings``
    the loss variant's own settings. A reference-free loss's pairs carry zeros as
    reference log-probabilities, which it never reads; an anchored loss's carry the
    ``anchor_*`` side too (triplets), which the policy scores in a forward of its own.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before training")
    columns = PAIR_KEYS + REF_KEYS
    first = examples.column_names if isinstance(examples, Dataset) else examples[0]
    if ANCHOR_KEYS[0] in first:
        columns += ANCHOR_KEYS
    if isinstance(examples, Dataset):
        missing = [key for key in columns if key not in examples.column_names]
        if missing:
            raise KeyError(f"the pairs data set lacks the columns {missing}; needs {list(columns)}")
        dataset = examples.select_columns(list(columns))
    else:
        check_pair_keys(examples, columns)
        dataset = Dataset.from_list(
            [{key: example[key] for key in columns} for example in examples]
        )
    trainer = SPINTrainer(
        model=model,
        args=args,
        data_collator=PairCollator(tokenizer.pad_token_id),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        loss_name=loss_name,
        beta=beta,
        label_smoothing=label_smoothing,
        nll_weight=nll_weight,
        loss_settings=loss_settings,
    )
    return run_training(trainer, resume_from, save_to)


def run_training(
    trainer: Trainer, resume_from: Path | None, save_to: Path | None = None
) -> list[dict]:
    """``trainer.train()``, from ``resume_from`` when given; returns the log history.

    The checkpoint restores weights, optimizer, schedule, RNG and the position in the data,
    so the run ends where an uninterrupted one would; its log history holds the steps
    logged before the interruption too. ``save_to``: the trained model and tokenizer are
    saved there by the Trainer, which gathers weights that FSDP or ZeRO-3 split over the
    processes (every process must call it; the main one writes).
    """
    if resume_from is not None:
        log.info("Resuming from checkpoint %s", resume_from)
    with freed_memory_returned():
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if save_to is not None:
        trainer.save_model(str(save_to))
    if trainer.is_deepspeed_enabled:
        # Arguments made for ZeRO-3 make every later from_pretrained partition the weights;
        # the next model loaded (generation, scoring) must be a whole one.
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        trainer.accelerator.free_memory()
        unset_hf_deepspeed_config()
    return trainer.state.log_history


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete Trainer checkpoint in ``directory``, or None; incomplete ones are
    deleted.

    The Trainer writes a checkpoint's state file last, so a checkpoint without a readable
    one for its step was cut short by a kill: resuming from it would fail, and left in place
    it would be counted by the Trainer's rotation of old checkpoints.
    """
    if not directory.is_dir():
        return None
    complete = []
    for path in directory.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match is None or not path.is_dir():
            continue
        step = int(match.group(1))
        if _saved_step(path) == step:
            complete.append((step, path))
        else:
            log.warning("Deleting %s: written only in part when the run was stopped", path)
            shutil.rmtree(path, ignore_errors=True)
    return max(complete)[1] if complete else None


def _saved_step(checkpoint: Path) -> int | None:
    """The global step recorded in a checkpoint's state file; None if it is missing or cut."""
    try:
        return json.loads((checkpoint / TRAINER_STATE).read_text())["global_step"]
    except (OSError, ValueError, KeyError):
        return None
