"""The SPACE and SimPO losses against values worked out by hand, and the tiny chain trained
with each: SimPO without any reference pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from conftest import job_dirs, train_in_process

from spin.losses import call_loss, get_loss, is_reference_free, variant_settings

# Three pairs. With beta = 0.5 the SPACE rewards beta * (policy - reference) are
# real [0.5, -0.5, 0.5] and generated [-0.5, 0.5, -1.5].
POLICY_REAL = torch.tensor([-10.0, -20.0, -5.0])
POLICY_GENERATED = torch.tensor([-12.0, -18.0, -7.0])
REF_REAL = torch.tensor([-11.0, -19.0, -6.0])
REF_GENERATED = torch.tensor([-11.0, -19.0, -4.0])
# Response tokens per pair: the SimPO rewards are means per token.
REAL_LENGTHS = torch.tensor([5, 10, 2])
GENERATED_LENGTHS = torch.tensor([4, 9, 7])


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log(1 + math.exp(x))


def space(mu: float, beta: float = 0.5, policy_real: torch.Tensor = POLICY_REAL):
    return get_loss("space")(policy_real, POLICY_GENERATED, REF_REAL, REF_GENERATED, beta, mu=mu)


def simpo(ref_real: torch.Tensor = REF_REAL, policy_real: torch.Tensor = POLICY_REAL):
    return call_loss(
        "simpo",
        policy_real=policy_real,
        policy_generated=POLICY_GENERATED,
        ref_real=ref_real,
        ref_generated=REF_GENERATED,
        beta=2.0,
        label_smoothing=0.0,
        real_lengths=REAL_LENGTHS,
        generated_lengths=GENERATED_LENGTHS,
        gamma=0.5,
    )


def test_space_with_mu_one_pushes_each_side_against_zero():
    # mu = 1, ln mu = 0: -logsig(r) - logsig(-r') = log(1 + e^-r) + log(1 + e^r').
    # r = [0.5, -0.5, 0.5], r' = [-0.5, 0.5, -1.5].
    expected = [
        softplus(-0.5) + softplus(-0.5),
        softplus(0.5) + softplus(0.5),
        softplus(-0.5) + softplus(-1.5),
    ]
    out = space(mu=1.0)
    torch.testing.assert_close(out.losses, torch.tensor(expected))
    torch.testing.assert_close(out.rewards_real, torch.tensor([0.5, -0.5, 0.5]))
    torch.testing.assert_close(out.rewards_generated, torch.tensor([-0.5, 0.5, -1.5]))


def test_space_noise_ratio_shifts_the_threshold_and_weights_the_generated_side():
    # mu = 3: -logsig(r - ln 3) - 3 logsig(ln 3 - r') = log(1 + 3 e^-r) + 3 log(1 + e^r' / 3).
    expected = [
        math.log(1 + 3 * math.exp(-0.5)) + 3 * math.log(1 + math.exp(-0.5) / 3),
        math.log(1 + 3 * math.exp(0.5)) + 3 * math.log(1 + math.exp(0.5) / 3),
        math.log(1 + 3 * math.exp(-0.5)) + 3 * math.log(1 + math.exp(-1.5) / 3),
    ]
    torch.testing.assert_close(space(mu=3.0).losses, torch.tensor(expected))


def test_simpo_compares_length_normalised_likelihoods_with_a_margin():
    # beta/|y| log p(y):   2 * [-10/5, -20/10, -5/2] = [-4, -4, -5]
    # beta/|y'| log p(y'): 2 * [-12/4, -18/9, -7/7] = [-6, -4, -2]
    # z = real - generated - gamma = [2 - 0.5, 0 - 0.5, -3 - 0.5] = [1.5, -0.5, -3.5]
    out = simpo()
    torch.testing.assert_close(
        out.losses, torch.tensor([softplus(-1.5), softplus(0.5), softplus(3.5)])
    )
    torch.testing.assert_close(out.rewards_real, torch.tensor([-4.0, -4.0, -5.0]))
    torch.testing.assert_close(out.rewards_generated, torch.tensor([-6.0, -4.0, -2.0]))


def test_simpo_never_reads_the_reference():
    assert is_reference_free("simpo") and not is_reference_free("space")
    torch.testing.assert_close(simpo(ref_real=torch.zeros(3)).losses, simpo().losses)


def test_gradients_reach_the_policy():
    for run in (lambda p: space(mu=2.0, policy_real=p), lambda p: simpo(policy_real=p)):
        policy_real = POLICY_REAL.clone().requires_grad_()
        run(policy_real).losses.sum().backward()
        # Raising a real response's likelihood lowers the loss.
        assert (policy_real.grad < 0).all()


def test_a_loss_gets_only_the_settings_it_declares():
    settings = {"mu": 3.0, "gamma": 0.5, "beta": 0.1, "nll_weight": 1.0}
    assert variant_settings("space", settings) == {"mu": 3.0}
    assert variant_settings("simpo", settings) == {"gamma": 0.5}
    assert variant_settings("sigmoid", settings) == {}


def artifacts(root: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (root / "artifacts" / kind).glob("*/spec.json")]


def test_simpo_chain_trains_without_a_reference_pass(tmp_path):
    train_in_process("experiment=tiny", "loss=simpo", "iter=0", f"paths.root={tmp_path}")
    assert not (tmp_path / "artifacts" / "reference").exists()
    (pairs,) = list((tmp_path / "artifacts" / "pairs").glob("*/spec.json"))
    (model,) = [s for s in artifacts(tmp_path, "model") if s.get("loss", {}).get("name") == "simpo"]
    assert model["pairs"] == pairs.parent.name and "reference" not in model
    assert model["loss"]["gamma"] == 0.5 and "mu" not in model["loss"]
    (job,) = job_dirs(tmp_path)
    rows = json.loads((job / "report.json").read_text())["rows"]
    (row,) = [r for r in rows if r["kind"] == "spin"]
    assert row["costs"]["reference_s"] is None and row["costs"]["train_s"] > 0


def test_space_chain_trains_on_reference_log_probs(tmp_path):
    train_in_process(
        "experiment=tiny", "loss=space", "loss.mu=2.0", "iter=0", f"paths.root={tmp_path}"
    )
    assert list((tmp_path / "artifacts" / "reference").glob("*/spec.json"))
    (model,) = [s for s in artifacts(tmp_path, "model") if s.get("loss", {}).get("name") == "space"]
    assert model["loss"]["mu"] == 2.0 and "gamma" not in model["loss"]


def test_a_reference_free_dpo_baseline_builds_no_reference_pass(tmp_path):
    train_in_process(
        "experiment=tiny",
        "baseline=dpo",
        "baseline.loss=simpo",
        "baseline.beta=2.0",
        "eval=none",
        f"paths.root={tmp_path}",
    )
    assert not (tmp_path / "artifacts" / "reference").exists()
    (model,) = [s for s in artifacts(tmp_path, "model") if s.get("loss", {}).get("name") == "simpo"]
    assert "pairs" in model and model["loss"]["gamma"] == 0.5
