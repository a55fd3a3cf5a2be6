"""Sequence log-probabilities of responses, for the policy and the frozen reference.

SPIN compares log p(y|x) summed over the response tokens only. The float32 log-softmax over
the vocabulary dominates memory on small models with large vocabularies, so it is taken
only on the positions that predict a response token: the model projects just those hidden
states onto the vocabulary (``logits_to_keep``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm
from transformers import PreTrainedModel

PAIR_KEYS = (
    "real_input_ids",
    "real_response_mask",
    "generated_input_ids",
    "generated_response_mask",
)

# Segments of a packed pair row (pack_pairs): the prompt both sides share, the rest of the
# real sequence, the rest of the generated one, padding.
SHARED, REAL, GENERATED, PAD = 0, 1, 2, 3

# Scored positions projected onto the vocabulary at once by pair_logps: a chunk's float32
# logits are 50 MB for a 49k vocabulary.
HEAD_CHUNK = 256
# Mixed-precision names of trainer.precision and the dtypes their autocast runs in.
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
# A reference pass given a chunk directory stores its results in about this many chunks of
# whole batches, so a killed pass loses at most about a twentieth of its work.
REFERENCE_CHUNKS = 20

log = logging.getLogger(__name__)


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


def shared_prefix_length(
    real_ids: list[int], real_mask: list[int], generated_ids: list[int], generated_mask: list[int]
) -> int:
    """How many leading prompt tokens the two sides of a pair have in common."""
    shared = 0
    for r, rm, g, gm in zip(real_ids, real_mask, generated_ids, generated_mask, strict=False):
        if r != g or rm or gm:
            break
        shared += 1
    return shared


def pack_pairs(features: list[dict], pad_token_id: int) -> dict[str, Tensor]:
    """Lay out each pair as one row ``prompt | real response | generated response``.

    Real and generated responses of a pair follow the same prompt, so the prompt is run
    through the model once instead of twice; the attention mask built by
    :func:`pair_attention_mask` keeps the generated response from seeing the real one, and
    its positions restart after the prompt, so every token sees exactly the context it has
    alone. Besides the padded rows this returns, for each scored response token, the flat
    position whose logits predict it (``score_index``), the token (``score_target``) and the
    sequence it belongs to (``score_owner``: pair b's real side is b, its generated side B + b).
    """
    check_pair_keys(features)
    rows, positions, segments = [], [], []
    score_index, score_target, score_owner = [], [], []
    n_pairs = len(features)
    for b, f in enumerate(features):
        real, real_mask = f["real_input_ids"], f["real_response_mask"]
        gen, gen_mask = f["generated_input_ids"], f["generated_response_mask"]
        for name, ids, mask in (("real", real, real_mask), ("generated", gen, gen_mask)):
            if len(ids) != len(mask):
                raise ValueError(
                    f"pair {b}: {name}_input_ids has {len(ids)} tokens but its "
                    f"{name}_response_mask {len(mask)}"
                )
        shared = shared_prefix_length(real, real_mask, gen, gen_mask)
        rows.append(list(real) + list(gen[shared:]))
        positions.append(list(range(len(real))) + list(range(shared, len(gen))))
        segments.append(
            [SHARED] * shared + [REAL] * (len(real) - shared) + [GENERATED] * (len(gen) - shared)
        )
        for t in range(1, len(real)):
            if real_mask[t]:
                score_index.append((b, t - 1))
                score_target.append(real[t])
                score_owner.append(b)
        for t in range(1, len(gen)):
            if gen_mask[t]:
                before = t - 1
                score_index.append((b, before if before < shared else len(real) + before - shared))
                score_target.append(gen[t])
                score_owner.append(n_pairs + b)
    length = max(len(row) for row in rows)
    batch = {
        "input_ids": torch.full((n_pairs, length), pad_token_id, dtype=torch.long),
        "position_ids": torch.zeros((n_pairs, length), dtype=torch.long),
        "segments": torch.full((n_pairs, length), PAD, dtype=torch.long),
    }
    for b, (row, pos, seg) in enumerate(zip(rows, positions, segments, strict=True)):
        batch["input_ids"][b, : len(row)] = torch.tensor(row, dtype=torch.long)
        batch["position_ids"][b, : len(row)] = torch.tensor(pos, dtype=torch.long)
        batch["segments"][b, : len(row)] = torch.tensor(seg, dtype=torch.long)
    batch["score_index"] = torch.tensor(
        [b * length + col for b, col in score_index], dtype=torch.long
    )
    batch["score_target"] = torch.tensor(score_target, dtype=torch.long)
    batch["score_owner"] = torch.tensor(score_owner, dtype=torch.long)
    return batch


def pair_attention_mask(segments: Tensor, attn_implementation: str, dtype: torch.dtype) -> Tensor:
    """The 4-D mask of packed pair rows: causal, and a token sees the shared prompt plus its
    own segment only (padding sees padding, so no row of the softmax is empty)."""
    n = segments.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = (causal & ((key == SHARED) | (key == query)))[:, None]
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        blocked = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
        return blocked.masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(
        f"attention implementation {attn_implementation!r} cannot take the packed pair mask; "
        "load the model with attn_implementation='sdpa' or 'eager'"
    )


def pair_logps(model: PreTrainedModel, batch: dict[str, Tensor]) -> Tensor:
    """Response log-probabilities of packed pairs (:func:`pack_pairs`): the B real sides,
    then the B generated sides, each equal to :func:`sequence_logps` of the sequence alone.

    Only the positions that predict a response token are projected onto the vocabulary, a
    few hundred at a time and recomputed in the backward pass (:func:`head_logps`), so the
    float32 logits of a whole batch (8 pairs of SmolLM2's 49k vocabulary: 0.3 GB, and as
    much again for each of their softmax's intermediates) never exist at once. A model whose
    head is more than one linear layer (a logit soft cap or scale), or whose weights FSDP or
    ZeRO-3 shard, is projected whole at the kept positions instead.
    """
    input_ids = batch["input_ids"]
    n_pairs, length = input_ids.shape
    # Under DDP (and DeepSpeed) ``model`` is a wrapper without the model's config; the
    # call below still goes through the wrapper, which synchronises the gradients.
    inner = extract_model_from_parallel(model)
    mask = pair_attention_mask(
        batch["segments"], inner.config._attn_implementation, next(model.parameters()).dtype
    )
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": batch["position_ids"]}
    if plain_head(inner) and weights_whole(model, inner):
        # One position's logits (the least the call computes); the last hidden state is
        # what the head projects.
        out = model(**inputs, logits_to_keep=1, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1].reshape(n_pairs * length, -1)[batch["score_index"]]
        token_logps = head_logps(inner.get_output_embeddings(), hidden, batch["score_target"])
    else:
        keep = torch.zeros(n_pairs * length, dtype=torch.bool, device=input_ids.device)
        keep[batch["score_index"]] = True
        # Row-major rank of each kept position among the kept ones: its row in the logits.
        rank = keep.long().cumsum(0) - 1
        logits = model(
            **inputs, logits_to_keep=keep.view(n_pairs, length), use_cache=False
        ).logits.float()
        rows = rank[batch["score_index"]]
        token_logps = logits[rows, batch["score_target"]] - logits.logsumexp(-1)[rows]
    sums = torch.zeros(2 * n_pairs, dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, batch["score_owner"], token_logps)


def plain_head(model: PreTrainedModel) -> bool:
    """Whether the model's logits are its output embeddings applied to its last hidden
    state and nothing more (no soft cap, no scale), as :func:`head_logps` assumes."""
    config = model.config
    return (
        model.get_output_embeddings() is not None
        and getattr(config, "final_logit_softcapping", None) is None
        and getattr(config, "logit_scale", None) in (None, 1, 1.0)
    )


def weights_whole(model: torch.nn.Module, inner: PreTrainedModel) -> bool:
    """Whether the head's weights can be used outside the model's own forward: true for a
    model on its own or under DDP; FSDP and ZeRO-3 gather a sharded weight only within it."""
    return model is inner or isinstance(model, torch.nn.parallel.DistributedDataParallel)


def head_logps(head: torch.nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    """``log softmax(head(hidden))[targets]`` row by row, :data:`HEAD_CHUNK` rows at a time,
    each chunk's logits recomputed in the backward pass rather than kept."""
    parts = [
        checkpoint(
            _chunk_logps,
            head,
            hidden[start : start + HEAD_CHUNK],
            targets[start : start + HEAD_CHUNK],
            use_reentrant=False,
        )
        for start in range(0, len(hidden), HEAD_CHUNK)
    ]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _chunk_logps(head: torch.nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def reference_logps(
    model: PreTrainedModel,
    examples: list[dict],
    batch_size: int,
    pad_token_id: int,
    desc: str,
    precision: str = "fp32",
    chunk_dir: Path | None = None,
) -> tuple[list[float], list[float]]:
    """Frozen-model log-probs of every pair's real and generated response, in input order.

    Computed once per iteration so training needs no second model in memory. ``batch_size``
    counts sequences: pairs go ``batch_size // 2`` to a batch, packed as in training
    (:func:`pack_pairs`) and grouped by length (longest first, so an out-of-memory batch
    shows up at once) to waste little compute on padding. ``precision`` is the training's
    mixed precision (``fp32``, ``bf16``, ``fp16``): computing the reference under the
    autocast the policy trains in keeps the rounding difference between the two out of the
    rewards. With ``chunk_dir``, each chunk of batches is stored there as it finishes and a
    stored chunk is read instead of computed, so a killed pass resumes where it stopped;
    chunks are whole batches of the same order, so the values are the ones a pass in one go
    gives.
    """
    if precision not in ("fp32", *AUTOCAST):
        raise ValueError(f"trainer.precision={precision!r}; expected one of {['fp32', *AUTOCAST]}")
    check_pair_keys(examples)
    batches = reference_batches(examples, batch_size)
    per_chunk = max(1, math.ceil(len(batches) / REFERENCE_CHUNKS))
    chunks = [batches[start : start + per_chunk] for start in range(0, len(batches), per_chunk)]
    if chunk_dir is not None:
        chunk_dir.mkdir(parents=True, exist_ok=True)
    real, generated = [0.0] * len(examples), [0.0] * len(examples)
    was_training = model.training
    model.eval()
    reused = 0
    with tqdm(total=len(batches), desc=desc, unit="batch") as bar:
        for index, chunk in enumerate(chunks):
            pairs = [i for batch in chunk for i in batch]
            path = chunk_dir / f"chunk-{index:05d}.json" if chunk_dir is not None else None
            stored = read_chunk(path, pairs) if path is not None else None
            if stored is None:
                stored = _score_batches(model, examples, chunk, pad_token_id, precision, bar)
                if path is not None:
                    write_chunk(path, pairs, *stored)
            else:
                reused += 1
                bar.update(len(chunk))
            for i, r, g in zip(pairs, *stored, strict=True):
                real[i], generated[i] = r, g
    model.train(was_training)
    if reused:
        log.info("%s: reused %d of %d reference chunks", desc, reused, len(chunks))
    return real, generated


def reference_batches(examples: list[dict], batch_size: int) -> list[list[int]]:
    """The batches :func:`reference_logps` scores, as pair positions: ``batch_size // 2``
    pairs each, longest packed row first. A run of whole batches, taken in this order,
    is batched the same way on its own, so a pass split over processes by batches gives
    the values of one pass."""
    order = sorted(range(len(examples)), key=lambda i: -packed_length(examples[i]))
    per_batch = max(1, batch_size // 2)
    return [order[start : start + per_batch] for start in range(0, len(order), per_batch)]


def _score_batches(
    model: PreTrainedModel,
    examples: list[dict],
    batches: list[list[int]],
    pad_token_id: int,
    precision: str,
    bar: tqdm,
) -> tuple[list[float], list[float]]:
    """Reference log-probs of the pairs of ``batches``, real and generated, batch by batch."""
    device = next(model.parameters()).device
    autocast = torch.autocast(
        device.type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST
    )
    real, generated = [], []
    with torch.no_grad(), autocast:
        for batch in batches:
            packed = pack_pairs([examples[i] for i in batch], pad_token_id)
            logps = pair_logps(model, {k: v.to(device) for k, v in packed.items()}).tolist()
            real += logps[: len(batch)]
            generated += logps[len(batch) :]
            bar.update(1)
    return real, generated


def read_chunk(path: Path, pairs: list[int]) -> tuple[list[float], list[float]] | None:
    """The stored log-probs of ``pairs`` (input positions) from ``path``; None when the chunk
    was never finished, or holds other pairs (``trainer.ref_batch_size`` changed)."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored["pairs"] != pairs:
        log.info("%s holds other pairs than this pass's chunk; computing it again", path)
        return None
    return stored["real"], stored["generated"]


def write_chunk(path: Path, pairs: list[int], real: list[float], generated: list[float]) -> None:
    """Store a chunk atomically, so a kill mid-write never leaves a chunk that looks done.
    JSON keeps every float exactly (its shortest repr reads back to the same value)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pairs": pairs, "real": real, "generated": generated}))
    os.replace(tmp, path)


def packed_length(example: dict) -> int:
    """Length of a pair's packed row: what its compute and padding scale with."""
    shared = shared_prefix_length(
        example["real_input_ids"],
        example["real_response_mask"],
        example["generated_input_ids"],
        example["generated_response_mask"],
    )
    return len(example["real_input_ids"]) + len(example["generated_input_ids"]) - shared
