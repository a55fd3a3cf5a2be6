"""SPIN loss variants, looked up by the name in ``loss.name``.

Every variant sees the same four per-pair sequence log-probabilities (policy and frozen
reference, for the real and the generated response) and returns per-pair losses plus the
implicit rewards ``beta * (policy - reference)`` that the trainer logs. Adding a variant is
one decorated function here plus one YAML file under ``conf/loss/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossOutput:
    """Per-pair losses and the rewards they were computed from (for logging)."""

    losses: Tensor
    rewards_real: Tensor
    rewards_generated: Tensor


LossFn = Callable[..., LossOutput]
LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Make a loss selectable as ``loss.name=<name>``; config validation reads ``LOSSES``."""

    def add(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        LOSSES[name] = fn
        return fn

    return add


def get_loss(name: str) -> LossFn:
    """The loss function registered as ``name``."""
    if name not in LOSSES:
        raise ValueError(
            f"loss.name={name!r} is not a known loss; expected one of {sorted(LOSSES)}"
        )
    return LOSSES[name]


def _rewards(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    return beta * (policy_real - ref_real), beta * (policy_generated - ref_generated)


def _reject_smoothing(name: str, label_smoothing: float) -> None:
    # A setting that silently does nothing would make a sweep over it look like noise.
    if label_smoothing != 0.0:
        raise ValueError(
            f"loss.label_smoothing={label_smoothing} is only used by loss.name='sigmoid', "
            f"not by {name!r}; set it to 0"
        )


@register_loss("sigmoid")
def sigmoid_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """The paper's logistic loss log(1 + exp(-z)); ``label_smoothing`` assumes that fraction
    of pairs is mislabelled (conservative DPO), which bounds the loss as z grows."""
    real, generated = _rewards(policy_real, policy_generated, ref_real, ref_generated, beta)
    z = real - generated
    losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return LossOutput(losses, real, generated)


@register_loss("hinge")
def hinge_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """max(0, 1 - z), the official code's alternative: no gradient once the margin reaches 1."""
    _reject_smoothing("hinge", label_smoothing)
    real, generated = _rewards(policy_real, policy_generated, ref_real, ref_generated, beta)
    return LossOutput(torch.relu(1 - (real - generated)), real, generated)


@register_loss("ipo")
def ipo_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """IPO: regress the unscaled log-ratio difference to 1/(2 beta) instead of pushing it to
    infinity, which keeps the policy near the reference when pairs are nearly identical."""
    _reject_smoothing("ipo", label_smoothing)
    real, generated = _rewards(policy_real, policy_generated, ref_real, ref_generated, beta)
    h = (policy_real - ref_real) - (policy_generated - ref_generated)
    return LossOutput((h - 1 / (2 * beta)) ** 2, real, generated)
