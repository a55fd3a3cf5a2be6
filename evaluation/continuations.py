"""Log-probabilities of continuations, computed only where a continuation is scored.

A loglikelihood request asks for ``log p(continuation | context)`` and whether greedy decoding
reproduces the continuation. lm-eval's HF model takes a log-softmax over the whole vocabulary
at every position of a right-padded batch, so a batch of 32 contexts of 300 tokens with a
49k vocabulary holds two 1.9 GB float32 tensors for continuations of a few tokens. Here the
batch is padded on the left instead, so every continuation ends at the last position: the
model projects only the last positions onto the vocabulary (``logits_to_keep``), and each
row's log-softmax is taken over its own continuation's positions alone. Positions come from
the attention mask, so a left-padded row is scored at the positions it has unpadded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from evaluation.decoding import left_padded


@dataclass(frozen=True)
class Window:
    """What the model reads for one request and how many of its last positions are scored.

    ``input_ids`` is context plus continuation without its last token, cut from the left to
    the model's length; its last ``n_scored`` positions predict the continuation's tokens.
    """

    input_ids: list[int]
    n_scored: int


def window(context: list[int], continuation: list[int], max_length: int) -> Window:
    """The request's model input as lm-eval cuts it: the last ``max_length`` tokens of the
    context and continuation, less the final token (which nothing in the input predicts)."""
    if not context or not continuation:
        raise ValueError("a loglikelihood request needs a context and a continuation token")
    if len(continuation) > max_length:
        raise ValueError(
            f"a continuation of {len(continuation)} tokens is longer than the model's "
            f"{max_length}-token window"
        )
    return Window((context + continuation)[-(max_length + 1) :][:-1], len(continuation))


# The most the vocabulary-wide logits of one forward pass may take; a batch whose scored
# positions need more is run in parts (a held-out response of 200 tokens in a batch of 32
# would otherwise hold 1.3 GB of float32 logits for a 49k vocabulary).
LOGITS_BUDGET_BYTES = 256 * 2**20


def parts(windows: list[Window], vocab_size: int, bytes_per_value: int) -> list[list[Window]]:
    """``windows`` in consecutive parts whose logits fit :data:`LOGITS_BUDGET_BYTES`."""
    per_row = max(w.n_scored for w in windows) * vocab_size * bytes_per_value
    rows = max(1, LOGITS_BUDGET_BYTES // per_row)
    return [windows[i : i + rows] for i in range(0, len(windows), rows)]


def continuation_logprobs(
    model: torch.nn.Module,
    windows: list[Window],
    pad_token_id: int,
    autocast_dtype: torch.dtype | None = None,
    softmax_dtype: torch.dtype | None = None,
) -> Iterator[Tensor]:
    """Per window, in turn, the log-softmax over the vocabulary at its scored positions
    (``[n_scored, vocab]``), from forward passes over the left-padded batch (in parts when
    its logits would exceed :data:`LOGITS_BUDGET_BYTES`). Each is made when asked for, so
    only one row's log-softmax is held at a time.

    ``softmax_dtype`` None takes the log-softmax in the logits' own dtype, as lm-eval does.
    """
    dtype = autocast_dtype or next(model.parameters()).dtype
    vocab = model.config.vocab_size
    for part in parts(windows, vocab, torch.finfo(dtype).bits // 8):
        yield from _forward(model, part, pad_token_id, autocast_dtype, softmax_dtype)


def _forward(
    model: torch.nn.Module,
    windows: list[Window],
    pad_token_id: int,
    autocast_dtype: torch.dtype | None,
    softmax_dtype: torch.dtype | None,
) -> Iterator[Tensor]:
    keep = max(w.n_scored for w in windows)
    device = next(model.parameters()).device
    input_ids, attention_mask, position_ids = (
        t.to(device) for t in left_padded([w.input_ids for w in windows], pad_token_id)
    )
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.inference_mode(), autocast:
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=keep,
            use_cache=False,
        ).logits
    for row, w in enumerate(windows):
        yield logits[row, keep - w.n_scored :].log_softmax(-1, dtype=softmax_dtype)


def answer(logprobs: Tensor, continuation: list[int]) -> tuple[float, bool]:
    """A loglikelihood request's answer from the log-softmax at the positions ending where
    ``continuation`` ends: its summed log-probability and whether every token is the
    argmax. ``logprobs`` may cover more positions (a request sharing all but its last token
    with a longer one, lm-eval's one-token cache): the trailing ones are used."""
    scored = logprobs[-len(continuation) :]
    targets = torch.tensor(continuation, device=scored.device)
    token_logprobs = scored.gather(-1, targets[:, None]).squeeze(-1)
    return float(token_logprobs.sum()), bool((scored.argmax(-1) == targets).all())
