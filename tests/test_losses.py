"""The SPIN loss variants against values worked out by hand for three pairs."""

from __future__ import annotations

import math

import pytest
import torch

from spin.losses import LOSSES, get_loss

BETA = 0.5
# Three pairs. Log-ratios policy - reference: real [+1, -1, +1], generated [-1, +1, -3],
# so h = real - generated = [2, -2, 4] and the logits z = beta * h = [1, -1, 2].
POLICY_REAL = torch.tensor([-10.0, -20.0, -5.0])
POLICY_GENERATED = torch.tensor([-12.0, -18.0, -7.0])
REF_REAL = torch.tensor([-11.0, -19.0, -6.0])
REF_GENERATED = torch.tensor([-11.0, -19.0, -4.0])


def run(name: str, label_smoothing: float = 0.0):
    return get_loss(name)(
        POLICY_REAL, POLICY_GENERATED, REF_REAL, REF_GENERATED, BETA, label_smoothing
    )


@pytest.mark.parametrize("name", ["sigmoid", "hinge", "ipo"])
def test_rewards_are_beta_times_the_log_ratios(name):
    out = run(name)
    torch.testing.assert_close(out.rewards_real, torch.tensor([0.5, -0.5, 0.5]))
    torch.testing.assert_close(out.rewards_generated, torch.tensor([-0.5, 0.5, -1.5]))


def test_sigmoid_is_the_logistic_loss_of_the_logits():
    # log(1 + exp(-z)) for z = 1, -1, 2
    expected = [math.log(1 + math.exp(-1)), math.log(1 + math.exp(1)), math.log(1 + math.exp(-2))]
    torch.testing.assert_close(run("sigmoid").losses, torch.tensor(expected))


def test_sigmoid_label_smoothing_mixes_in_the_flipped_pair():
    # 0.9 * log(1 + exp(-z)) + 0.1 * log(1 + exp(z))
    expected = [
        0.9 * math.log(1 + math.exp(-z)) + 0.1 * math.log(1 + math.exp(z)) for z in (1, -1, 2)
    ]
    torch.testing.assert_close(run("sigmoid", label_smoothing=0.1).losses, torch.tensor(expected))


def test_hinge_is_zero_past_a_margin_of_one():
    # max(0, 1 - z) for z = 1, -1, 2
    torch.testing.assert_close(run("hinge").losses, torch.tensor([0.0, 2.0, 0.0]))


def test_ipo_regresses_the_unscaled_difference_to_one_over_two_beta():
    # (h - 1 / (2 * 0.5))^2 for h = 2, -2, 4
    torch.testing.assert_close(run("ipo").losses, torch.tensor([1.0, 9.0, 9.0]))


def test_unknown_loss_names_the_key_and_the_options():
    with pytest.raises(ValueError, match=r"loss\.name='nope'") as err:
        get_loss("nope")
    for name in ("sigmoid", "hinge", "ipo"):
        assert name in str(err.value)
    assert {"sigmoid", "hinge", "ipo"} <= set(LOSSES)


@pytest.mark.parametrize("name", ["hinge", "ipo"])
def test_label_smoothing_is_refused_where_it_would_be_ignored(name):
    with pytest.raises(ValueError, match=r"loss\.label_smoothing"):
        run(name, label_smoothing=0.1)
