"""SPIN loss variants, looked up by the name in ``loss.name``.

Every variant sees the same four per-pair sequence log-probabilities (policy and frozen
reference, for the real and the generated response) and returns per-pair losses plus the
implicit rewards ``beta * (policy - reference)`` that the trainer logs. Adding a variant is
one decorated function here, its name in :data:`spin.names.LOSSES` (what validation
allows) and one YAML file under ``conf/loss/``.

The trainer offers every loss the same keyword arguments (:func:`call_loss`): ``beta``,
``label_smoothing``, the per-pair response token counts ``real_lengths`` and
``generated_lengths``, and each variant setting of ``LossConfig`` (``mu``, ``gamma``, ...);
a loss receives only the names its signature declares, so a new variant's setting is one
field in ``LossConfig`` and one parameter of its function. The settings a loss declares
(:func:`variant_settings`) go into its trained model's key, so variants that declare none
keep the keys they had. A loss registered with ``reference_free=True`` never reads the
reference log-probabilities (they arrive as zeros) and the chain runs no reference pass
for it. A loss registered with ``anchored=True`` also reads ``policy_anchor``: the policy's
log-probability of iteration 0's generation for the same prompt (None in iteration 0 and
wherever there is no such generation, e.g. DPO's preference pairs).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from spin.names import LOSS_ALIASES
from spin.names import LOSSES as LOSS_NAMES


@dataclass
class LossOutput:
    """Per-pair losses and the rewards they were computed from (for logging)."""

    losses: Tensor
    rewards_real: Tensor
    rewards_generated: Tensor


LossFn = Callable[..., LossOutput]
LOSSES: dict[str, LossFn] = {}
# Losses that never read the reference log-probabilities: no reference pass runs for them.
REFERENCE_FREE: set[str] = set()
# Losses that also score iteration 0's generation (policy_anchor): their pairs carry it.
ANCHORED: set[str] = set()
# What every loss is offered besides its variant settings (not part of those settings).
COMMON_ARGUMENTS = (
    "policy_real",
    "policy_generated",
    "ref_real",
    "ref_generated",
    "beta",
    "label_smoothing",
    "real_lengths",
    "generated_lengths",
    "policy_anchor",
)


def register_loss(
    name: str, reference_free: bool = False, anchored: bool = False
) -> Callable[[LossFn], LossFn]:
    """Make a loss selectable as ``loss.name=<name>``; config validation reads ``LOSSES``."""

    def add(fn: LossFn) -> LossFn:
        if name in LOSSES or name not in LOSS_NAMES:
            raise ValueError(f"loss {name!r} is registered twice or is not in spin.names.LOSSES")
        LOSSES[name] = fn
        if reference_free:
            REFERENCE_FREE.add(name)
        if anchored:
            ANCHORED.add(name)
        return fn

    return add


def canonical_loss(name: str) -> str:
    """The registered loss ``name`` runs as: itself, or the loss an alias names (``rpo``
    is ``sigmoid`` with the NLL term). Artifact keys record this name, so a model trained
    under an alias is the one trained under the loss it names."""
    return LOSS_ALIASES.get(name, name)


def is_reference_free(name: str) -> bool:
    """Whether loss ``name`` trains without reference log-probabilities."""
    return canonical_loss(name) in REFERENCE_FREE


def is_anchored(name: str) -> bool:
    """Whether loss ``name`` also scores iteration 0's generation of each prompt."""
    return canonical_loss(name) in ANCHORED


def variant_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Those of ``settings`` (e.g. the ``loss`` config) that loss ``name`` declares beyond
    the common arguments: what it is called with and what its model's key records."""
    declared = inspect.signature(get_loss(name)).parameters
    return {k: settings[k] for k in declared if k not in COMMON_ARGUMENTS and k in settings}


def call_loss(name: str, **offered: Any) -> LossOutput:
    """Loss ``name`` called with the offered keyword arguments its signature declares."""
    fn = get_loss(name)
    declared = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in offered.items() if k in declared})


def get_loss(name: str) -> LossFn:
    """The loss function registered as ``name`` (or as the loss an alias names)."""
    if canonical_loss(name) not in LOSSES:
        raise ValueError(
            f"loss.name={name!r} is not a known loss; expected one of {sorted(LOSSES)}"
        )
    return LOSSES[canonical_loss(name)]


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


@register_loss("space")
def space_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    mu: float = 1.0,
) -> LossOutput:
    """SPACE (arXiv 2512.07175): noise-contrastive estimation with noise ratio ``mu``,
    -log sigma_mu(r(y)) - mu * log(1 - sigma_mu(r(y'))) with sigma_mu(z) = sigmoid(z - ln mu),
    that is ``-logsig(r(y) - ln mu) - mu * logsig(ln mu - r(y'))``.

    Certain from the paper: the real and generated responses are separate terms (each is
    pushed against an absolute threshold, not against the other, so real likelihood cannot
    fall freely with the generated one's), and ``mu`` is the noise ratio (the paper runs
    mu = 1). Reconstructed: r = ``beta * (policy - reference)`` with summed response
    log-probs; the paper's pseudocode has no beta, so ``beta = 1`` is the paper's loss and
    smaller beta scales the reward as in the other variants. With larger ``mu`` the paper
    appears to draw ``mu`` generations per prompt; here one pair per prompt is weighted
    ``mu`` instead.
    """
    _reject_smoothing("space", label_smoothing)
    if mu <= 0:
        raise ValueError(f"loss.mu={mu} must be > 0 (the noise ratio of loss.name='space')")
    real, generated = _rewards(policy_real, policy_generated, ref_real, ref_generated, beta)
    shift = math.log(mu)
    losses = -F.logsigmoid(real - shift) - mu * F.logsigmoid(shift - generated)
    return LossOutput(losses, real, generated)


@register_loss("simpo", reference_free=True)
def simpo_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    real_lengths: Tensor,
    generated_lengths: Tensor,
    label_smoothing: float = 0.0,
    gamma: float = 0.5,
) -> LossOutput:
    """SimPO (arXiv 2405.14734, eq. 6): ``-logsig(beta/|y| log p(y) - beta/|y'| log p(y')
    - gamma)``. The reward is the policy's mean response log-prob scaled by beta, with no
    reference model, so it is the likelihood generation itself ranks by and the length
    normalisation keeps long responses from winning by length; ``gamma`` is the target
    margin. The rewards returned (and logged) are these length-normalised ones."""
    _reject_smoothing("simpo", label_smoothing)
    real = beta * policy_real / real_lengths.clamp(min=1)
    generated = beta * policy_generated / generated_lengths.clamp(min=1)
    return LossOutput(-F.logsigmoid(real - generated - gamma), real, generated)


def tilted_risk(losses: Tensor, tau: float) -> Tensor:
    """The tilted risk (1/tau) log mean exp(tau * losses) over a batch (tau = 0: the mean).

    Written around the mean m as m + log1p(mean(expm1(tau * (losses - m)))) / tau, which
    stays accurate as tau -> 0 instead of cancelling two logs of nearly equal size; below
    |tau| = 1e-6 its second-order expansion m + tau/2 * mean((losses - m)^2) avoids 0/0.
    """
    m = losses.mean()
    d = losses - m
    if abs(tau) < 1e-6:
        return m + tau / 2 * (d**2).mean()
    return m + torch.log1p(torch.expm1(tau * d).mean()) / tau


@register_loss("iris")
def iris_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    alpha: float = 1.5,
) -> LossOutput:
    """IRIS (arXiv 2604.20933), a RECONSTRUCTION: the paper's equation was not readable here.

    What the public abstract fixes: two independent tilted risks, one over real and one over
    generated responses, with importance weights exponential in the loss and controlled by
    the Renyi order ``alpha``. Reconstructed as SPACE's separate noise-contrastive terms
    (mu = 1), l_real = -logsig(r_real) and l_gen = -logsig(-r_gen) with r = beta * (policy -
    reference), each tilted over the micro-batch with tau = alpha - 1:

        L = (1/tau) log mean exp(tau * l_real) + (1/tau) log mean exp(tau * l_gen)

    Pair i's gradient weight is softmax(tau * l)_i: alpha > 1 up-weights the pairs the model
    gets most wrong (sharper, mode-covering: early iterations), alpha < 1 down-weights them
    (smoother: near convergence). alpha -> 1 is the plain expected log-loss (order 1 = KL
    regime), i.e. SPACE with mu = 1; alpha = 2 gives log mean (1 + exp(-r_real)), a
    chi-squared-type moment of the density ratio. Uncertain: whether the paper tilts the
    log-losses or the rewards themselves, whether its alpha -> 1 case is SPIN's gap loss
    rather than SPACE's separate terms, and its adaptive alpha schedule (here alpha is set
    per iteration with ``schedule.<t>.alpha``). A tilted risk belongs to the batch, so every
    pair carries the batch value (their mean is L) and the result depends on the
    micro-batch size: one pair per micro-batch makes any alpha equal to SPACE.
    """
    _reject_smoothing("iris", label_smoothing)
    real, generated = _rewards(policy_real, policy_generated, ref_real, ref_generated, beta)
    tau = alpha - 1
    total = tilted_risk(-F.logsigmoid(real), tau) + tilted_risk(-F.logsigmoid(-generated), tau)
    return LossOutput(total.expand_as(real), real, generated)


@register_loss("tspin", reference_free=True, anchored=True)
def tspin_loss(
    policy_real: Tensor,
    policy_generated: Tensor,
    ref_real: Tensor,
    ref_generated: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    policy_anchor: Tensor | None = None,
    history_weight: float = 0.1,
) -> LossOutput:
    """T-SPIN (arXiv 2601.08198, eq. 7) on triplets (y real, y' current generation, y0 the
    initial policy's generation for the same prompt), with l = -logsig and a = ``beta``:

        l(a log p(y) - a log p(y')) + b * l(a log p(y') - a log p(y0)),  b = ``history_weight``

    The first term is SPIN's current advantage; the second, the historical advantage, asks
    the current generation to beat the initial policy's, so the loss keeps a gradient when y'
    comes close to y and the first term flattens. The reward is a * log p_theta with summed
    response log-probs and no reference model: the paper's entropy constraint takes the
    place of SPIN's KL to the previous model, and its optimum is this reference-free reward.
    y0 is iteration 0's generation, made once and reused; the policy scores it in training
    (``policy_anchor``). In iteration 0, y0 is y' itself, so there is no history: the second
    term is left out (the paper's b = 0 at iteration 0), as it is where no y0 exists (DPO).
    The paper's defaults are a = 1 and b = 0.1. Uncertain: the paper also allows
    l(x) = exp(-x), not offered here.
    """
    _reject_smoothing("tspin", label_smoothing)
    real, generated = beta * policy_real, beta * policy_generated
    losses = -F.logsigmoid(real - generated)
    if policy_anchor is not None:
        losses = losses - history_weight * F.logsigmoid(generated - beta * policy_anchor)
    return LossOutput(losses, real, generated)
