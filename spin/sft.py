"""Supervised fine-tuning on real responses: the optional stage before iteration 0 and the
paper's "SFT one more epoch" baseline.

Examples are formatted by the same :class:`~spin.data.PromptFormatter` as SPIN's pairs, so a
model fine-tuned here sees exactly the text SPIN later scores. Only response tokens carry a
label; the model's own causal-LM loss and the Trainer do the rest, with the batch order and
checkpoints of SPIN training (:class:`spin.trainer.ResumableOrder`), so a killed run resumes.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
)

from spin.data import PromptFormatter
from spin.trainer import ResumableOrder, run_training

IGNORE_INDEX = -100


def encode_sft(
    formatter: PromptFormatter,
    records: list[dict],
    max_prompt_length: int,
    max_length: int,
) -> Dataset:
    """Token ids of each prompt + real response, labels masked to the response."""
    rows = []
    for record in records:
        encoded = formatter.encode(
            record["prompt"], record["response"], max_prompt_length, max_length
        )
        ids = encoded["input_ids"]
        labels = [
            t if m else IGNORE_INDEX for t, m in zip(ids, encoded["response_mask"], strict=True)
        ]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    formatter.report_cuts("SFT", len(records), max_length)
    return Dataset.from_list(rows)


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    args: TrainingArguments,
    resume_from: Path | None = None,
    save_to: Path | None = None,
) -> list[dict]:
    """Fine-tune ``model`` in place on an :func:`encode_sft` data set; returns the log history.

    ``args`` comes from :func:`spin.trainer.training_arguments`, whose length-grouped batches
    read a ``length`` column, added here. ``resume_from`` is a checkpoint of an interrupted
    run of the same fine-tuning (:func:`spin.trainer.last_checkpoint`) to continue from;
    ``save_to`` where the Trainer saves the model (:func:`spin.trainer.run_training`).
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before training")
    dataset = dataset.add_column("length", [len(ids) for ids in dataset["input_ids"]])
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
    trainer = ResumableOrder(
        model=model,
        args=args,
        data_collator=lambda rows: collator([{k: r[k] for k in r if k != "length"} for r in rows]),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    # Generation pads on the left; training pads on the right, so positions start at 0.
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        return run_training(trainer, resume_from, save_to)
    finally:
        tokenizer.padding_side = side
