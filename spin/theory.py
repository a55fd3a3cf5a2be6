"""SPIN's population theory, computed exactly in a world whose p_data is known.

The paper's Section 5: with the logistic loss and a global minimiser over an unrestricted
model class, iteration t's opponent p_t is followed by

    p_{t+1}(y|x)  ∝  p_t(y|x) * (p_data(y|x) / p_t(y|x)) ** (1 / lambda),

lambda being the loss's beta; p_data is the only fixed point. In log space the error
e_t = log p_t - log p_data becomes (1 - 1/lambda) e_t plus a constant, so lambda = 1 lands on
p_data in one step, lambda > 1/2 approaches it, lambda = 1/2 cycles and lambda < 1/2 (the
paper's 0.1) is pushed away with growing amplitude. The same update with a reference other
than the opponent has no such closed form here, nor have the reference-free losses (SimPO,
T-SPIN: their optimum does not stay in the exponential family around p_t).

:func:`model_log_probs` gives a model's exact distribution over an enumerable language, the
starting point of :func:`trajectory`; :mod:`evaluation.exact` has the divergences.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig
from scipy.special import logsumexp
from transformers import PreTrainedModel

from spin.data import PromptFormatter
from spin.data.world import World
from spin.logprobs import pad_right, sequence_logps
from spin.models import load_model
from spin.stages.prompts import formatter


def within_language(log_q: np.ndarray) -> np.ndarray:
    """Log-probabilities over the enumerated responses (last axis) renormalised to sum to 1:
    the distribution the theorem speaks of, without the mass a model leaks elsewhere."""
    return log_q - logsumexp(log_q, axis=-1, keepdims=True)


def theorem_step(log_q: np.ndarray, log_p: np.ndarray, beta: float) -> np.ndarray:
    """The next opponent's log-probabilities over the enumerated responses (last axis),
    from the current ``log_q`` and p_data's ``log_p``, renormalised."""
    return within_language(log_q + (log_p - log_q) / beta)


def trajectory(log_q0: np.ndarray, log_p: np.ndarray, beta: float, steps: int) -> list[np.ndarray]:
    """``log_q0`` (renormalised over the language) and the ``steps`` opponents after it."""
    out = [within_language(log_q0)]
    for _ in range(steps):
        out.append(theorem_step(out[-1], log_p, beta))
    return out


def forward_kl(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, in nats."""
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


@torch.no_grad()
def model_log_probs(
    model: PreTrainedModel,
    fmt: PromptFormatter,
    world: World,
    prompts: list[str],
    max_prompt_length: int,
    max_length: int,
) -> np.ndarray:
    """The model's log-probability of every response of the language after each prompt,
    shape (prompts, responses), encoded exactly as training encodes them."""
    model.eval()
    pad = fmt.tokenizer.pad_token_id
    rows = []
    for prompt in prompts:
        encoded = fmt.encode_pair(prompt, world.responses, max_prompt_length, max_length)
        batch = pad_right(
            [e["input_ids"] for e in encoded], [e["response_mask"] for e in encoded], pad
        )
        batch = {k: v.to(model.device) for k, v in batch.items()}
        rows.append(sequence_logps(model, **batch).double().cpu().numpy())
    return np.stack(rows)


def saved_model_log_probs(
    cfg: DictConfig, directory: str, world: World, prompts: list[str]
) -> np.ndarray:
    """:func:`model_log_probs` of the model saved in ``directory``, its prompts formatted and
    bounded as the job ``cfg`` trains."""
    model, tokenizer = load_model(directory)
    lengths = cfg.model.max_prompt_length, cfg.model.max_length
    return model_log_probs(model, formatter(cfg, tokenizer), world, prompts, *lengths)
