"""Greedy decoding of a batch that sheds its finished rows.

``generate`` keeps every row of a batch until the last one stops: on the embedded GSM8k-style
task a batch of 32 ran 108 steps while its rows' answers ended after 22 to 108 tokens (median
about 60), so nearly half the decoding steps computed rows already done. Here a row leaves
the batch, and its slice of the key-value cache, as soon as it ends: at an end-of-sequence
token, at a stop sequence in its text, or at its token budget. Each row sees exactly the
tokens and positions it sees under ``generate`` with left padding, and takes the argmax of
the same logits, so the answers are greedy ``generate``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache

# lm-eval's normalised generation settings that greedy decoding here honours.
GREEDY_KEYS = frozenset({"do_sample", "temperature", "until", "max_gen_toks"})
# Generation-config fields that change which token greedy ``generate`` picks, and their
# neutral values: a model whose config sets one is decoded by ``generate`` itself.
GREEDY_ALTERING = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
}


def is_plain_greedy(settings: dict[str, Any]) -> bool:
    """Whether lm-eval's normalised generation settings ask for plain greedy decoding."""
    return not settings.get("do_sample") and set(settings) <= GREEDY_KEYS


def greedy_altered(model: Any) -> bool:
    """Whether the model's generation config makes greedy ``generate`` pick other tokens
    than the argmax of the logits."""
    config = model.generation_config
    return any(getattr(config, k, None) not in neutral for k, neutral in GREEDY_ALTERING.items())


def generation_eos_ids(model: Any) -> set[int]:
    """The token ids that end a generation under ``generate``: the generation config's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)


def left_padded(
    rows: list[list[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and position ids of ``rows``, padded on the left to one
    length; each row's positions count from 0 at its first token, as it has them alone."""
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, length - len(row) :] = 1
    return input_ids, attention_mask, (attention_mask.cumsum(-1) - 1).clamp(min=0)


def greedy_until(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new_tokens: int,
    stops: list[str],
    decode: Callable[[list[int]], str],
    eos_token_ids: set[int],
    pad_token_id: int,
) -> list[list[int]]:
    """Each prompt's greedy continuation: its tokens up to and including the first
    end-of-sequence token, up to the first whose ``decode``d text holds one of ``stops``,
    or ``max_new_tokens`` of them."""
    device = next(model.parameters()).device
    input_ids, attention_mask, position_ids = (
        t.to(device) for t in left_padded(prompts, pad_token_id)
    )
    cache = DynamicCache()
    out: list[list[int]] = [[] for _ in prompts]
    rows = torch.arange(len(prompts), device=device)  # which prompt each batch row is
    with torch.inference_mode():
        while True:
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
            tokens = logits[:, -1].argmax(-1)
            going = []
            for batch_row, (prompt, token) in enumerate(
                zip(rows.tolist(), tokens.tolist(), strict=True)
            ):
                out[prompt].append(token)
                done = (
                    token in eos_token_ids
                    or len(out[prompt]) >= max_new_tokens
                    or any(stop in decode(out[prompt]) for stop in stops)
                )
                if not done:
                    going.append(batch_row)
            if not going:
                return out
            if len(going) < len(rows):
                keep = torch.tensor(going, device=device)
                cache.batch_select_indices(keep)
                rows, tokens = rows[keep], tokens[keep]
                attention_mask, position_ids = attention_mask[keep], position_ids[keep]
            input_ids = tokens[:, None]
            position_ids = position_ids[:, -1:] + 1
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], -1)
