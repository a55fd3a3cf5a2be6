"""Exact divergences between a model and a known data distribution (the exact world).

When p_data is known and every response can be listed (``data.source=world``), a model's
whole conditional distribution over the language is its log-likelihood of each response, and
the divergences SPIN's theory speaks of need no sampling. The chain writes one document per
prompt (:func:`exact_doc`): its context ids, every response's token ids, ``log p_data`` of
each and, for training prompts, how often each response occurs in the SFT data. lm-eval
scores each response as one choice of a multiple-choice document (``tasks/world``, ids as
given, see :class:`evaluation.model.LoadedModel`), and :func:`exact_metrics` turns a
document's log-likelihoods into the measures below.

Per prompt, with p = p_data, q the model's probabilities of the language's responses and
``out`` the mass the model puts on anything else (a symbol outside the language, a response
too long):

- ``kl_fwd`` = KL(p || q) in nats per response, ``kl_fwd_token`` the same per response token
  (divided by p's expected number of tokens, end included): the held-out NLL minus the
  data's entropy, exactly;
- ``kl_rev`` = KL(q' || p) of the model's distribution renormalised over the language (q' =
  q / (1 - out); the true reverse KL is infinite whenever ``out`` > 0, which ``mass_out``
  reports beside it);
- ``tv``: total variation, ``out`` counted as disagreement;
- ``entropy``: the entropy of q', and ``logp_data_model``: the mean ``log p_data`` of the
  model's own samples (under q'), the quantity a self-play opponent is judged by;
- ``greedy_logp_data``: ``log p_data`` of the response greedy decoding within the language
  gives (each next symbol, or the end, the one with the most model mass below it);
- ``kl_emp``: KL(p_hat || q) to the empirical distribution of the SFT sample (training
  prompts), which a model that memorised its data makes small while ``kl_fwd`` stays large.

All are diagnostics beside the task scores, in no average; the divergences are losses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.heldout import CHOICE_IDS, CONTEXT, CONTEXT_IDS
from evaluation.plan import EXACT_TASK, TaskPlan

CHOICES = "choices"
LOG_P_DATA, COUNTS = "log_p_data", "counts"
DOCS_FILE = "prompts.jsonl"
# Metrics of the plan over test prompts and of the one over training prompts, each logged
# as ``<data>_<metric>`` and ``<data>_train_<metric>``.
TEST_METRICS = (
    "kl_fwd",
    "kl_fwd_token",
    "kl_rev",
    "tv",
    "mass_out",
    "entropy",
    "logp_data_model",
    "greedy_logp_data",
)
TRAIN_METRICS = ("kl_emp", "kl_fwd")
TRAIN_SUFFIX = "_train"
# The measures in nats (the others, tv and mass_out, are fractions).
NATS = (
    "kl_fwd",
    "kl_fwd_token",
    "kl_rev",
    "kl_emp",
    "entropy",
    "logp_data_model",
    "greedy_logp_data",
)


def exact_doc(
    context: str,
    context_ids: list[int],
    choices: list[str],
    choice_ids: list[list[int]],
    log_p_data: list[float],
    counts: list[int],
) -> dict[str, Any]:
    """One prompt with every response of the language, scored as a multiple-choice item."""
    if not (len(choices) == len(choice_ids) == len(log_p_data) == len(counts)):
        raise ValueError("an exact-world document needs one id list, log p and count per choice")
    return {
        CONTEXT: context,
        CONTEXT_IDS: list(context_ids),
        CHOICES: list(choices),
        CHOICE_IDS: [list(ids) for ids in choice_ids],
        LOG_P_DATA: [float(v) for v in log_p_data],
        COUNTS: [int(c) for c in counts],
    }


def exact_plan(name: str, docs: list[dict[str, Any]], directory: Path) -> TaskPlan:
    """The plan scoring ``docs`` (written to ``directory/name``), logged under ``name``'s
    prefix: ``<data>_exact`` over test prompts, ``<data>_train_exact`` over training ones."""
    path = directory / name / DOCS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return TaskPlan(name, EXACT_TASK, 0, "kl_fwd,none", data_files={"test": path})


def reported_names(plan: TaskPlan) -> dict[str, str]:
    """lm-eval result key -> the flat name the metric is logged and tabulated under."""
    prefix = plan.name.removesuffix("_exact")
    metrics = TRAIN_METRICS if prefix.endswith(TRAIN_SUFFIX) else TEST_METRICS
    return {f"{metric},none": f"{prefix}_{metric}" for metric in metrics}


def greedy_choice(choices: list[str], probs: np.ndarray) -> int:
    """Index of the response greedy decoding within the language reaches: from the empty
    prefix, take the next symbol (or the end, once something was said) whose completions
    hold the most mass, until the end wins or no longer response exists."""
    mass: dict[str, float] = {}
    for choice, p in zip(choices, probs, strict=True):
        for k in range(1, len(choice) + 1):
            mass[choice[:k]] = mass.get(choice[:k], 0.0) + float(p)
    index = {choice: i for i, choice in enumerate(choices)}
    prefix = ""
    while True:
        options = {c: mass[c] for c in mass if len(c) == len(prefix) + 1 and c.startswith(prefix)}
        stop = float(probs[index[prefix]]) if prefix in index else -1.0
        if not options or stop >= max(options.values()):
            return index[prefix]
        prefix = max(options, key=options.__getitem__)


def exact_metrics(
    loglik: np.ndarray,
    log_p_data: np.ndarray,
    counts: np.ndarray,
    choices: list[str],
    tokens: np.ndarray,
) -> dict[str, float]:
    """Every measure of the module docstring for one prompt; ``loglik`` is the model's log-
    probability of each response, ``tokens`` each response's token count (end included)."""
    p = np.exp(log_p_data)
    q = np.exp(loglik)
    inside = q.sum()
    q_in = q / inside
    log_q_in = loglik - np.log(inside)
    metrics = {
        "kl_fwd": float(np.sum(p * (log_p_data - loglik))),
        "kl_rev": float(np.sum(q_in * (log_q_in - log_p_data))),
        "tv": float(0.5 * (np.abs(p - q).sum() + max(0.0, 1.0 - inside))),
        "mass_out": float(max(0.0, 1.0 - inside)),
        "entropy": float(-np.sum(q_in * log_q_in)),
        "logp_data_model": float(np.sum(q_in * log_p_data)),
        "greedy_logp_data": float(log_p_data[greedy_choice(choices, q)]),
    }
    metrics["kl_fwd_token"] = metrics["kl_fwd"] / float(np.sum(p * tokens))
    seen = counts > 0
    empirical = counts[seen] / counts.sum() if seen.any() else np.array([])
    metrics["kl_emp"] = float(np.sum(empirical * (np.log(empirical) - loglik[seen])))
    return metrics


def doc_metrics(doc: dict[str, Any], loglik: list[float]) -> dict[str, float]:
    """:func:`exact_metrics` of one document and the model's log-likelihood per choice."""
    return exact_metrics(
        np.asarray(loglik, dtype=np.float64),
        np.asarray(doc[LOG_P_DATA], dtype=np.float64),
        np.asarray(doc[COUNTS], dtype=np.float64),
        doc[CHOICES],
        np.array([len(ids) for ids in doc[CHOICE_IDS]], dtype=np.float64),
    )
