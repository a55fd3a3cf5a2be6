"""Stopping training at the first non-finite loss; each step's logged values to the log file.

A NaN or infinite loss poisons the weights at the next optimizer step, and the Trainer's own
logging hides it (``logging_nan_inf_filter`` replaces it by the running mean), so a run
would go on for hours and save a broken model. :class:`FiniteLossTrainer` checks every
batch's loss right after its backward pass, before the optimizer can apply it, and raises
:class:`NonFiniteLossError` naming the step and the batch. The checkpoints saved before
that step stay where they are: the last of them is the last good state.

The stock progress callback prints every logged step's values as a dict between the lines
of the training bar; :class:`StepsToLog` keeps the bar and writes them to the job's log file
instead (they are in ``metrics.jsonl`` too).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from spin.errors import NonFiniteLossError

# Logs at DEBUG, which Hydra's job logging lets through to the log file only
# (conf/hydra/job_logging/spin.yaml).
STEPS_LOG = logging.getLogger(f"{__name__}.steps")


class BatchPosition(TrainerCallback):
    """Which batch of which epoch the Trainer is on (it counts only optimizer steps)."""

    def __init__(self) -> None:
        self.batches_per_epoch = 1
        self.seen = 0

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        # A resumed run starts at a step boundary of some epoch.
        self.batches_per_epoch = max(len(train_dataloader), 1) if train_dataloader else 1
        accumulation = args.gradient_accumulation_steps
        steps_per_epoch = math.ceil(self.batches_per_epoch / accumulation)
        epochs, steps = divmod(state.global_step, steps_per_epoch)
        self.seen = epochs * self.batches_per_epoch + steps * accumulation

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seen += 1

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seen += 1

    def current(self) -> tuple[int, int]:
        """The batch being trained: (epoch, batch within the epoch), both from 1."""
        epoch, batch = divmod(self.seen, self.batches_per_epoch)
        return epoch + 1, batch + 1


class StepsToLog(ProgressCallback):
    """The Trainer's progress bar, named ``train``, with each logged step's values (loss,
    rewards, learning rate, ...) written in full to the log file instead of printed."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description("train")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and logs:
            STEPS_LOG.debug("step %d: %s", state.global_step, logs)


class FiniteLossTrainer(Trainer):
    """A Trainer that raises :class:`NonFiniteLossError` at the first batch whose loss is
    not finite, before the optimizer step that would apply it, and shows its progress
    through :class:`StepsToLog`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_position = BatchPosition()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or ()), self.batch_position]
        super().__init__(*args, **kwargs)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(StepsToLog)

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        bad = (~torch.isfinite(loss)).any().float()
        # Every process must stop at the same batch, or the others wait for it forever.
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item():
            raise NonFiniteLossError(self._describe(loss))
        return loss

    def _describe(self, loss: Tensor) -> str:
        epoch, batch = self.batch_position.current()
        output_dir = self.args.output_dir
        saved = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        kept = (
            f"the last checkpoint before it, {saved}, is kept"
            if saved is not None
            else "no checkpoint had been saved yet"
        )
        local = loss.float().mean().item()
        value = local if not math.isfinite(local) else "finite here but not on another process"
        return (
            f"training loss is {value} (expected a finite number) at step "
            f"{self.state.global_step + 1}, batch {batch} of epoch {epoch}; training stopped "
            f"before the optimizer applied it and {kept}. Lower the learning rate or beta, "
            "or train in fp32 (trainer.precision=fp32)"
        )
