"""Held-out real-response negative log-likelihood: how close the model is to the data.

SPIN's fixed point is p_theta = p_data, so the quantity its theory predicts to fall is the
forward KL from the data's responses to the model, which up to the data's own entropy is the
negative log-likelihood of the real responses of held-out prompts. The chain hands this
package its test split already formatted and tokenised as it trains (chat template, system
turn, truncation), one document per prompt (:func:`heldout_doc`); lm-eval scores each as a
loglikelihood request over exactly those tokens, and ``tasks/heldout/utils.py`` turns the
result into the NLL per response token and whether greedy decoding reproduces the response.

Both are diagnostics, not task scores: the NLL is a lower-is-better loss, so neither enters
the average over tasks (:mod:`evaluation.summary`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.plan import HELDOUT_TASK, TaskPlan

# A document's fields: the texts (for reading and lm-eval's request) and the token ids that
# are scored (evaluation.runner.LoadedModel).
CONTEXT, CONTINUATION = "context", "continuation"
CONTEXT_IDS, CONTINUATION_IDS = "context_ids", "continuation_ids"
# An exact-world document's ids, one list per choice (evaluation/exact.py).
CHOICE_IDS = "choice_ids"
DOCS_FILE = "test.jsonl"
# lm-eval result keys -> the suffix of the logged name (``<data>_nll``, ``<data>_greedy_match``).
METRICS = {"nll,none": "nll", "greedy_match,none": "greedy_match"}


def heldout_doc(
    context: str, continuation: str, context_ids: list[int], continuation_ids: list[int]
) -> dict[str, Any]:
    """One test prompt and its real response, as rendered and tokenised for training."""
    if not continuation_ids:
        raise ValueError(f"the response after {context[-40:]!r} has no token to score")
    return {
        CONTEXT: context,
        CONTINUATION: continuation,
        CONTEXT_IDS: list(context_ids),
        CONTINUATION_IDS: list(continuation_ids),
    }


def heldout_plan(data_name: str, docs: list[dict[str, Any]], directory: Path) -> TaskPlan:
    """The plan scoring ``docs`` (written to ``directory``), reported as ``<data_name>_nll``
    and ``<data_name>_greedy_match``. Its artifact spec holds a hash of the documents, so a
    changed test split, prompt format or tokenizer scores again."""
    path = directory / DOCS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs))
    return TaskPlan(f"{data_name}_nll", HELDOUT_TASK, 0, "nll,none", data_files={"test": path})


def reported_names(plan: TaskPlan) -> dict[str, str]:
    """lm-eval result key -> the flat name the metric is logged and tabulated under."""
    prefix = plan.name.removesuffix("_nll")
    return {key: f"{prefix}_{suffix}" for key, suffix in METRICS.items()}


def given_ids(doc: Any, choice: int) -> tuple[list[int], list[int]] | None:
    """The context and continuation token ids a request's document carries (a held-out NLL
    document, or choice ``choice`` of an exact-world one), else None."""
    if not isinstance(doc, dict) or CONTEXT_IDS not in doc:
        return None
    if CONTINUATION_IDS in doc:
        return doc[CONTEXT_IDS], doc[CONTINUATION_IDS]
    if CHOICE_IDS in doc:
        return doc[CONTEXT_IDS], doc[CHOICE_IDS][choice]
    return None
