"""Sequence log-probabilities, the pair collator and SPINTrainer on the tiny model."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from conftest import compose_config
from datasets import Dataset
from tiny_pairs import encode, make_pairs, tiny_training_args

from spin.errors import ConfigError
from spin.logprobs import pad_right, pair_logps, reference_logps, sequence_logps
from spin.models import build_tiny
from spin.trainer import METRICS, PairCollator, SPINTrainer, train_pairs
from spin.validation import validate

PAIRS = [
    ("What is 2+3?", "2+3=5. #### 5", "It is 6"),
    ("Tom has 4 apples and eats 1. How many are left?", "4-1=3. #### 3", "#### 5"),
    ("What is 7*8?", "#### 56", "7*8 is 54, so #### 54"),
    ("Add 10 and 11.", "10+11=21 #### 21", "21"),
]


def with_reference(model, tokenizer, pairs: list[dict]) -> list[dict]:
    real, generated = reference_logps(model, pairs, 3, tokenizer.pad_token_id, desc="reference")
    return [
        {**pair, "ref_real_logps": r, "ref_generated_logps": g}
        for pair, r, g in zip(pairs, real, generated, strict=True)
    ]


def alone(model, ids: list[int], mask: list[int]) -> float:
    batch = pad_right([ids], [mask], pad_token_id=0)
    with torch.no_grad():
        return sequence_logps(model, **batch).item()


def args_for(tmp_path, **overrides):
    return tiny_training_args(tmp_path, len(PAIRS), **overrides)


def test_logp_sums_exactly_the_response_tokens(tiny):
    model, tokenizer = tiny
    ids, mask = encode(tokenizer, *PAIRS[0][:2])
    with torch.no_grad():
        token_logps = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    # Token t is predicted by the logits at t - 1.
    by_hand = [token_logps[t - 1, ids[t]].item() for t in range(1, len(ids))]
    expected = sum(lp for lp, m in zip(by_hand, mask[1:], strict=True) if m)
    assert alone(model, ids, mask) == pytest.approx(expected, abs=1e-4)

    # Leaving the last response token out of the mask removes exactly its term.
    shorter = [*mask[:-1], 0]
    assert alone(model, ids, shorter) == pytest.approx(expected - by_hand[-1], abs=1e-4)
    assert alone(model, ids, [0] * len(ids)) == 0.0


def test_padding_side_does_not_change_logps(tiny):
    model, tokenizer = tiny
    pairs = make_pairs(tokenizer, PAIRS)
    seqs = [p["real_input_ids"] for p in pairs]
    masks = [p["real_response_mask"] for p in pairs]
    singles = torch.tensor([alone(model, s, m) for s, m in zip(seqs, masks, strict=True)])

    right = pad_right(seqs, masks, tokenizer.pad_token_id)
    length = right["input_ids"].shape[1]
    left = {
        "input_ids": torch.tensor([[tokenizer.pad_token_id] * (length - len(s)) + s for s in seqs]),
        "attention_mask": torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in seqs]),
        "response_mask": torch.tensor([[0] * (length - len(m)) + m for m in masks]),
    }
    assert len({len(s) for s in seqs}) > 1, "the test needs sequences of different lengths"
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, **right), singles, atol=1e-5, rtol=0)
        torch.testing.assert_close(sequence_logps(model, **left), singles, atol=1e-5, rtol=0)


def test_packed_pairs_score_each_sequence_as_alone(tiny):
    model, tokenizer = tiny
    pairs = [
        {**p, "ref_real_logps": 0.0, "ref_generated_logps": 0.0}
        for p in make_pairs(tokenizer, PAIRS)
    ]
    batch = PairCollator(tokenizer.pad_token_id)(pairs)
    # One row per pair, the shared prompt once: shorter than the two sequences side by side.
    assert batch["input_ids"].shape[0] == len(pairs)
    longest = max(len(p["real_input_ids"]) + len(p["generated_input_ids"]) for p in pairs)
    assert batch["input_ids"].shape[1] < longest
    with torch.no_grad():
        logps = pair_logps(model, batch)
    real = [alone(model, p["real_input_ids"], p["real_response_mask"]) for p in pairs]
    generated = [
        alone(model, p["generated_input_ids"], p["generated_response_mask"]) for p in pairs
    ]
    torch.testing.assert_close(
        logps, torch.tensor(real + generated), atol=1e-5, rtol=1e-6
    )  # float32 sums of ~100


def test_reference_logps_equal_a_frozen_copy_in_input_order(tiny):
    model, tokenizer = tiny
    pairs = with_reference(model, tokenizer, make_pairs(tokenizer, PAIRS))
    frozen = copy.deepcopy(model).eval()
    batch = PairCollator(tokenizer.pad_token_id)(pairs)
    with torch.no_grad():
        logps = pair_logps(frozen, batch)
    n = len(pairs)
    torch.testing.assert_close(batch["ref_real_logps"], logps[:n], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch["ref_generated_logps"], logps[n:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"trainer\.precision='fp8'"):
        reference_logps(model, pairs, 3, tokenizer.pad_token_id, desc="ref", precision="fp8")


def test_training_starts_at_log2_and_raises_the_margin(tmp_path):
    model, tokenizer = build_tiny(seed=0)
    pairs = with_reference(model, tokenizer, make_pairs(tokenizer, PAIRS))
    # The pipeline hands over a stored data set; extra columns must not matter.
    dataset = Dataset.from_list([{**p, "prompt": "unused"} for p in pairs])
    history = train_pairs(
        model,
        tokenizer,
        dataset,
        args_for(tmp_path, epochs=6),
        loss_name="sigmoid",
        beta=0.1,
        label_smoothing=0.0,
        nll_weight=0.0,
    )
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 6
    first, last = steps[0], steps[-1]
    # Before the first update the policy is the reference: zero rewards, loss log 2.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/real"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/generated"] == pytest.approx(0.0, abs=1e-5)
    assert last["rewards/margins"] > first["rewards/margins"] + 0.1
    assert last["rewards/accuracies"] == 1.0
    assert last["loss"] < first["loss"]
    assert {key for key in first if "/" in key} == {
        "rewards/real",
        "rewards/generated",
        "rewards/margins",
        "rewards/accuracies",
        "logps/real",
        "logps/generated",
    }


def test_evaluation_logs_prefixed_metrics_and_nll_weight_adds_the_real_nll(tiny, tmp_path):
    model, tokenizer = tiny
    pairs = with_reference(model, tokenizer, make_pairs(tokenizer, PAIRS))
    trainer = SPINTrainer(
        model=copy.deepcopy(model),
        args=args_for(tmp_path),
        data_collator=PairCollator(tokenizer.pad_token_id),
        eval_dataset=Dataset.from_list(pairs),
        loss_name="sigmoid",
        beta=0.1,
        nll_weight=0.5,
    )
    metrics = trainer.evaluate()
    assert {f"eval_{name}" for name in METRICS} <= set(metrics)
    assert metrics["eval_rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    n_tokens = torch.tensor([sum(p["real_response_mask"][1:]) for p in pairs])
    nll = (-torch.tensor([p["ref_real_logps"] for p in pairs]) / n_tokens).mean().item()
    assert metrics["eval_loss"] == pytest.approx(math.log(2) + 0.5 * nll, abs=1e-4)


def test_training_arguments_map_the_config_names(tmp_path):
    args = args_for(tmp_path, optimizer="rmsprop", warmup_ratio=0.1)
    assert args.optim == "rmsprop"
    assert args.warmup_steps == 0.1
    assert not args.remove_unused_columns
    assert args.save_strategy == "no"
    assert args_for(tmp_path).optim == "adamw_torch"
    # Names and ranges are checked once, where the job starts, not again here.
    for override, key in (
        ("trainer.warmup_ratio=1.0", "trainer.warmup_ratio"),
        ("trainer.optimizer=sgd", "trainer.optimizer"),
    ):
        with pytest.raises(ConfigError, match=re.escape(key)):
            validate(compose_config("experiment=tiny", override))
