"""The optimised computations give what the straightforward ones give, on the tiny model.

Straightforward here means: each sequence alone through the model, logits over the whole
vocabulary at every position, log-softmax, the response tokens' terms summed; the DPO loss
by hand from those sums on a frozen copy of the reference model.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_pairs import make_pairs, tiny_training_args

from spin import logprobs
from spin.logprobs import pack_pairs, pair_logps, reference_logps
from spin.models import build_tiny
from spin.trainer import train_pairs

PAIRS = [
    ("What is 2+3?", "2+3=5. #### 5", "It is 6"),
    ("Tom has 4 apples and eats 1. How many are left?", "4-1=3. #### 3", "#### 5"),
    ("What is 7*8?", "#### 56", "7*8 is 54, so #### 54"),
    ("Add 10 and 11.", "10+11=21 #### 21", "21"),
    ("A longer question that makes this pair the longest of all?", "#### 1", "#### 2"),
]


def full_logits_logp(model, ids: list[int], mask: list[int]) -> torch.Tensor:
    """The textbook computation: one sequence, full float32 log-softmax, masked sum."""
    logits = model(torch.tensor([ids])).logits[0].float()
    token_logps = logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return (token_logps * torch.tensor(mask[1:], dtype=torch.float32)).sum()


def straightforward(model, pairs: list[dict]) -> torch.Tensor:
    """Real sides then generated sides, like :func:`pair_logps`."""
    real = [full_logits_logp(model, p["real_input_ids"], p["real_response_mask"]) for p in pairs]
    generated = [
        full_logits_logp(model, p["generated_input_ids"], p["generated_response_mask"])
        for p in pairs
    ]
    return torch.stack(real + generated)


def test_packed_pairs_equal_full_logits_log_softmax_sums(tiny):
    model, tokenizer = tiny
    pairs = make_pairs(tokenizer, PAIRS)
    with torch.no_grad():
        expected = straightforward(model, pairs)
        packed = pair_logps(model, pack_pairs(pairs, tokenizer.pad_token_id))
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("head", ["chunked", "whole"])
def test_packed_pairs_give_the_full_computations_gradients(tiny, monkeypatch, head):
    """The vocabulary projection in chunks recomputed in the backward pass (3 rows a chunk
    here), or whole for a head with a soft cap, trains on the textbook gradients."""
    model, tokenizer = tiny
    pairs = make_pairs(tokenizer, PAIRS)
    monkeypatch.setattr(logprobs, "HEAD_CHUNK", 3)
    if head == "whole":
        monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
    assert logprobs.plain_head(model) == (head == "chunked")
    expected = torch.autograd.grad(straightforward(model, pairs).sum(), model.parameters())
    packed = pair_logps(model, pack_pairs(pairs, tokenizer.pad_token_id))
    got = torch.autograd.grad(packed.sum(), model.parameters())
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_eager_attention_takes_the_same_packed_mask(tiny):
    model, tokenizer = tiny
    pairs = make_pairs(tokenizer, PAIRS)
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"
    batch = pack_pairs(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(
            pair_logps(eager, batch), pair_logps(model, batch), atol=1e-4, rtol=1e-5
        )


def test_packed_gradients_equal_the_straightforward_ones(tiny):
    """Training follows the same path: the gradient of the packed sums is the textbook one."""
    model, tokenizer = tiny
    pairs = make_pairs(tokenizer, PAIRS)
    weights = torch.linspace(-1.0, 1.0, 2 * len(pairs))  # every sequence counts differently

    def gradients(logps_fn) -> list[torch.Tensor]:
        policy = copy.deepcopy(model)
        (logps_fn(policy) * weights).sum().backward()
        return [p.grad for p in policy.parameters()]

    packed = gradients(lambda m: pair_logps(m, pack_pairs(pairs, tokenizer.pad_token_id)))
    expected = gradients(lambda m: straightforward(m, pairs))
    for got, want in zip(packed, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_grouping_and_batch_size_do_not_change_any_pairs_values(tiny):
    model, tokenizer = tiny
    pairs = make_pairs(tokenizer, PAIRS)
    pad = tokenizer.pad_token_id
    one_per_batch = reference_logps(model, pairs, 2, pad, desc="ref")
    all_together = reference_logps(model, pairs, 2 * len(pairs), pad, desc="ref")
    reversed_pairs = reference_logps(model, pairs[::-1], 4, pad, desc="ref")
    for got in (all_together, tuple(values[::-1] for values in reversed_pairs)):
        for side_got, side_want in zip(got, one_per_batch, strict=True):
            torch.testing.assert_close(
                torch.tensor(side_got), torch.tensor(side_want), atol=1e-5, rtol=1e-6
            )


def test_first_step_loss_equals_dpo_by_hand_on_a_frozen_reference(tmp_path):
    policy, tokenizer = build_tiny(seed=0)
    reference, _ = build_tiny(seed=1)  # a different model, so the rewards are not zero
    frozen = copy.deepcopy(reference).eval()
    pairs = make_pairs(tokenizer, PAIRS)
    ref_real, ref_generated = reference_logps(
        reference, pairs, 4, tokenizer.pad_token_id, desc="ref"
    )
    data = [
        {**p, "ref_real_logps": r, "ref_generated_logps": g}
        for p, r, g in zip(pairs, ref_real, ref_generated, strict=True)
    ]
    beta = 0.1
    with torch.no_grad():
        n = len(pairs)
        policy_logps = straightforward(policy.eval(), pairs)
        reference_by_hand = straightforward(frozen, pairs)
    margin = (policy_logps[:n] - reference_by_hand[:n]) - (policy_logps[n:] - reference_by_hand[n:])
    loss_by_hand = -F.logsigmoid(beta * margin).mean().item()
    assert not math.isclose(loss_by_hand, math.log(2), abs_tol=1e-3)

    args = tiny_training_args(tmp_path, len(pairs))
    history = train_pairs(policy, tokenizer, data, args, "sigmoid", beta, 0.0, 0.0)
    first = next(h for h in history if "loss" in h)
    assert first["loss"] == pytest.approx(loss_by_hand, abs=1e-5)
    assert first["logps/real"] == pytest.approx(policy_logps[:n].mean().item(), abs=1e-4)
    assert first["logps/generated"] == pytest.approx(policy_logps[n:].mean().item(), abs=1e-4)
