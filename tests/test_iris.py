"""IRIS (reconstructed, docs/variants.md): values by hand, the alpha -> 1 limit, gradients,
and the per-iteration alpha of ``schedule.<t>.alpha`` reaching that iteration's training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, train_in_process

from spin.job import run_job
from spin.losses import get_loss, tilted_risk
from spin.validation import ConfigError, validate

LN2 = math.log(2)
# beta = 1 and zero reference log-probs, so the rewards are the policy log-probs:
# real rewards (0, ln 3), generated rewards (0, -ln 3).
REAL = torch.tensor([0.0, math.log(3)])
GENERATED = torch.tensor([0.0, -math.log(3)])


def iris(alpha: float, real: torch.Tensor = REAL, generated: torch.Tensor = GENERATED):
    zero = torch.zeros_like(real)
    return get_loss("iris")(real, generated, zero, zero, beta=1.0, alpha=alpha)


def test_alpha_two_by_hand():
    # Real log-losses -logsig(r): r = 0 -> ln 2; r = ln 3 -> ln(1 + 1/3) = ln(4/3).
    # Generated log-losses -logsig(-r'): r' = 0 -> ln 2; r' = -ln 3 -> ln(4/3).
    # alpha = 2, tau = 1: each term is ln mean exp(l) = ln((2 + 4/3) / 2) = ln(5/3).
    out = iris(2.0)
    expected = 2 * math.log(5 / 3)
    assert torch.allclose(out.losses, torch.full((2,), expected), atol=1e-6)
    assert torch.allclose(out.rewards_real, REAL)
    assert torch.allclose(out.rewards_generated, GENERATED)


def test_alpha_one_half_by_hand():
    # tau = -1/2: each term is -2 ln mean exp(-l/2) = -2 ln((2^-1/2 + (4/3)^-1/2) / 2)
    # = -2 ln((0.70711 + 0.86603) / 2) = -2 ln(0.78657) = 0.48013; two terms: 0.96026.
    expected = 2 * -2 * math.log((2**-0.5 + (4 / 3) ** -0.5) / 2)
    assert abs(expected - 0.96026) < 1e-4
    assert torch.allclose(iris(0.5).losses, torch.full((2,), expected), atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 1 + 1e-7, 1 - 1e-7, 1 + 1e-3])
def test_alpha_to_one_is_space_with_mu_one(alpha):
    # The untilted (KL-order) case: the mean of SPACE's separate log-losses,
    # (ln 2 + ln 4/3) / 2 twice = ln 2 + ln 4/3 = ln(8/3).
    real = torch.tensor([0.3, -1.2, 2.0, 0.0])
    generated = torch.tensor([-0.5, 0.7, 1.5, -3.0])
    space = (-F.logsigmoid(real) - F.logsigmoid(-generated)).mean()
    tol = 1e-5 if alpha != 1 + 1e-3 else 2e-3
    assert torch.allclose(iris(alpha, real, generated).losses, space.expand(4), atol=tol)
    assert abs(iris(1.0).losses[0].item() - math.log(8 / 3)) < 1e-6


def test_tilted_risk_is_continuous_in_tau():
    losses = torch.tensor([0.1, 0.9, 2.5])
    near = [tilted_risk(losses, tau).item() for tau in (-2e-6, -5e-7, 0.0, 5e-7, 2e-6)]
    assert max(near) - min(near) < 1e-5
    # Larger tau weights the largest loss more: the tilted risk rises towards the max.
    assert tilted_risk(losses, 1.0) > tilted_risk(losses, 0.0) > tilted_risk(losses, -1.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_gradients_flow_to_both_responses(alpha):
    real = torch.tensor([0.2, -0.4], requires_grad=True)
    generated = torch.tensor([0.1, 0.3], requires_grad=True)
    iris(alpha, real, generated).losses.mean().backward()
    # Raising a real reward and lowering a generated one both lower the loss.
    assert (real.grad < 0).all() and (generated.grad > 0).all()
    assert torch.isfinite(real.grad).all() and torch.isfinite(generated.grad).all()


def test_larger_alpha_weights_the_worst_pair_more():
    # Pair 1's real response is the one the model gets most wrong (lowest reward).
    real = torch.tensor([2.0, -2.0], requires_grad=True)
    shares = []
    for alpha in (0.5, 2.0):
        real.grad = None
        iris(alpha, real, torch.zeros(2)).losses.mean().backward()
        shares.append((real.grad[1] / real.grad.sum()).item())
    assert shares[1] > shares[0]


def test_alpha_must_be_positive():
    with pytest.raises(ConfigError, match=r"loss\.alpha"):
        validate(compose_config("loss=iris", "loss.alpha=0"))
    with pytest.raises(ConfigError, match=r"schedule\.1\.alpha"):
        validate(compose_config("loss=iris", "+schedule.1.alpha=-1"))


def model_specs(root) -> list[dict]:
    models = root / "artifacts" / "model"
    return [json.loads(spec.read_text()) for spec in sorted(models.glob("*/spec.json"))]


def test_schedule_alpha_reaches_its_iteration(tmp_path):
    root = tmp_path / "outputs"
    cfg = compose_config(
        "experiment=tiny",
        "loss=iris",
        "iter=1",
        "+schedule.1.alpha=0.5",
        "data.n_train=8",
        "generation.max_new_tokens=8",
        "eval.tasks=[]",
        f"paths.root={root}",
    )
    run_job(cfg, tmp_path / "job", "job")
    alphas = sorted(spec["loss"]["alpha"] for spec in model_specs(root) if "loss" in spec)
    assert alphas == [0.5, 1.5]


def test_train_runs_with_iris(tmp_path):
    train_in_process("experiment=tiny", "loss=iris", f"paths.root={tmp_path}")
    assert (tmp_path / "artifacts" / "model").is_dir()
