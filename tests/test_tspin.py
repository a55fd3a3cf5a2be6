"""T-SPIN against values worked out by hand from its eq. 7, and the tiny chain trained with
it: triplets that reuse iteration 0's generations, scored by the policy, no reference pass."""

from __future__ import annotations

import json
import math

import torch
from conftest import train_in_process
from datasets import load_from_disk

from spin.losses import call_loss, is_anchored, is_reference_free

POLICY_REAL = torch.tensor([-10.0, -20.0])
POLICY_GENERATED = torch.tensor([-12.0, -18.0])
POLICY_ANCHOR = torch.tensor([-15.0, -17.0])


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log(1 + math.exp(x))


def tspin(anchor: torch.Tensor | None, beta: float = 1.0, weight: float = 0.1):
    zeros = torch.zeros(2)
    return call_loss(
        "tspin",
        policy_real=POLICY_REAL,
        policy_generated=POLICY_GENERATED,
        ref_real=zeros,
        ref_generated=zeros,
        beta=beta,
        label_smoothing=0.0,
        policy_anchor=anchor,
        history_weight=weight,
    )


def test_tspin_adds_the_historical_advantage_over_the_initial_generation():
    # a = 1: current advantage z = [-10 + 12, -20 + 18] = [2, -2],
    # historical advantage h = [-12 + 15, -18 + 17] = [3, -1];
    # loss = log(1 + e^-z) + 0.1 log(1 + e^-h).
    expected = [softplus(-2) + 0.1 * softplus(-3), softplus(2) + 0.1 * softplus(1)]
    out = tspin(POLICY_ANCHOR)
    torch.testing.assert_close(out.losses, torch.tensor(expected))
    torch.testing.assert_close(out.rewards_real, POLICY_REAL)
    torch.testing.assert_close(out.rewards_generated, POLICY_GENERATED)


def test_tspin_scales_log_probs_by_a_and_has_no_history_in_iteration_0():
    # a = 0.5: z = [1, -1]; without an anchor (iteration 0) only the current advantage.
    out = tspin(None, beta=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([softplus(-1), softplus(1)]))
    # b = 0 is the same loss as no anchor.
    torch.testing.assert_close(tspin(POLICY_ANCHOR, beta=0.5, weight=0.0).losses, out.losses)


def test_the_historical_term_pushes_the_initial_generation_down():
    anchor = POLICY_ANCHOR.clone().requires_grad_()
    tspin(anchor).losses.sum().backward()
    assert (anchor.grad > 0).all()
    assert is_reference_free("tspin") and is_anchored("tspin")


def test_tspin_chain_reuses_iteration_0_generations_without_a_reference(tmp_path):
    train_in_process(
        "experiment=tiny", "loss=tspin", "iter=1", "eval=none", f"paths.root={tmp_path}"
    )
    assert not (tmp_path / "artifacts" / "reference").exists()
    models = {
        p.parent.name: json.loads(p.read_text())
        for p in (tmp_path / "artifacts" / "model").glob("*/spec.json")
    }
    trained = {k for k, s in models.items() if s.get("loss", {}).get("name") == "tspin"}
    # Iteration 0's generations are the ones no trained model made.
    (first,) = [
        p.parent.name
        for p in (tmp_path / "artifacts" / "generations").glob("*/spec.json")
        if json.loads(p.read_text())["model"] not in trained
    ]
    pair_sets = {
        p.parent.name: json.loads(p.read_text())
        for p in (tmp_path / "artifacts" / "pairs").glob("*/spec.json")
    }
    # Iteration 0 has no history; iteration 1's pairs carry iteration 0's generations.
    anchored = {k: s for k, s in pair_sets.items() if "anchor" in s}
    assert len(pair_sets) == 2 and len(anchored) == 1
    ((key, spec),) = anchored.items()
    assert spec["anchor"] == first
    pairs = load_from_disk(str(tmp_path / "artifacts" / "pairs" / key / "pairs"))
    assert {"anchor_input_ids", "anchor_response_mask"} <= set(pairs.column_names)
    assert all(sum(mask) > 0 for mask in pairs["anchor_response_mask"])
    assert sorted(models[k]["pairs"] for k in trained) == sorted(pair_sets)
    assert all(models[k]["loss"]["history_weight"] == 0.1 for k in trained)
