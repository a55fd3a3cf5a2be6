"""Sequence log-probabilities of responses, for the policy and the frozen reference.

SPIN compares log p(y|x) summed over the response tokens only. The float32 log-softmax over
the vocabulary dominates memory on small models with large vocabularies, so it is taken
only on the positions that predict a response token: the model projects just those hidden
states onto the vocabulary (``logits_to_keep``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel

PAIR_KEYS = (
    "real_input_ids",
    "real_response_mask",
    "generated_input_ids",
    "generated_response_mask",
)

# Mixed-precision names of trainer.precision and the dtypes their autocast runs in.
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_pair_keys(examples: list[dict], keys: tuple[str, ...] = PAIR_KEYS) -> None:
    """Fail before any compute if a pair lacks a field, naming the pair and the field."""
    for i, example in enumerate(examples):
        missing = [key for key in keys if key not in example]
        if missing:
            raise KeyError(f"pair {i} lacks {missing}; every pair needs the keys {list(keys)}")


def pad_right(
    input_ids: list[list[int]], response_masks: list[list[int]], pad_token_id: int
) -> dict[str, Tensor]:
    """Pad token sequences and their response masks to one length, on the right."""
    for i, (ids, mask) in enumerate(zip(input_ids, response_masks, strict=True)):
        if len(ids) != len(mask):
            raise ValueError(
                f"sequence {i}: input_ids has {len(ids)} tokens but its response_mask {len(mask)}"
            )
    length = max(len(ids) for ids in input_ids)
    batch = {
        "input_ids": torch.full((len(input_ids), length), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(input_ids), length), dtype=torch.long),
        "response_mask": torch.zeros((len(input_ids), length), dtype=torch.long),
    }
    for row, (ids, mask) in enumerate(zip(input_ids, response_masks, strict=True)):
        batch["input_ids"][row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        batch["attention_mask"][row, : len(ids)] = 1
        batch["response_mask"][row, : len(ids)] = torch.tensor(mask, dtype=torch.long)
    return batch


def sequence_logps(
    model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> Tensor:
    """Sum of log p(token_t | tokens_<t) over the tokens with ``response_mask == 1``, per row.

    Positions come from the attention mask, so a sequence scores the same whether it is
    left-padded, right-padded or alone. A response token at position 0 has no prediction
    and is not counted.
    """
    # Logits at position t predict token t + 1. Only the positions predicting a response
    # token in some row are projected onto the vocabulary (a 1-D ``logits_to_keep``, which
    # every recent transformers release accepts); the model is still called as a whole so
    # distributed wrappers see the forward.
    predicts = torch.zeros_like(response_mask, dtype=torch.bool)
    predicts[:, :-1] = response_mask[:, 1:].bool()
    keep = predicts.any(0).nonzero().squeeze(-1)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=keep,
        use_cache=False,
    ).logits.float()
    targets = input_ids[:, keep + 1]
    token_logps = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
    return (token_logps * predicts[:, keep]).sum(-1)


def reference_logps(
    model: PreTrainedModel,
    examples: list[dict],
    batch_size: int,
    pad_token_id: int,
    desc: str,
    precision: str = "fp32",
) -> tuple[list[float], list[float]]:
    """Frozen-model log-probs of every pair's real and generated response, in input order.

    Computed once per iteration so training needs no second model in memory. Sequences are
    batched by length (longest first, so an out-of-memory batch shows up at once) to waste
    little compute on padding. ``precision`` is the training's mixed precision (``fp32``,
    ``bf16``, ``fp16``): computing the reference under the autocast the policy trains in
    keeps the rounding difference between the two out of the rewards.
    """
    if precision not in ("fp32", *AUTOCAST):
        raise ValueError(f"trainer.precision={precision!r}; expected one of {['fp32', *AUTOCAST]}")
    check_pair_keys(examples)
    sequences = [(ex["real_input_ids"], ex["real_response_mask"]) for ex in examples]
    sequences += [(ex["generated_input_ids"], ex["generated_response_mask"]) for ex in examples]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]), reverse=True)
    device = next(model.parameters()).device
    results = [0.0] * len(sequences)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(
        device.type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST
    )
    with torch.no_grad(), autocast:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            chunk = order[start : start + batch_size]
            batch = pad_right(
                [sequences[i][0] for i in chunk], [sequences[i][1] for i in chunk], pad_token_id
            )
            logps = sequence_logps(model, **{k: v.to(device) for k, v in batch.items()})
            for i, value in zip(chunk, logps.tolist(), strict=True):
                results[i] = value
    model.train(was_training)
    return results[: len(examples)], results[len(examples) :]
