"""Scoring helpers of the held-out NLL task (response_nll.yaml)."""

from __future__ import annotations


def context(doc: dict) -> str:
    return doc["context"]


def continuation(doc: dict) -> str:
    return doc["continuation"]


def process_results_nll(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """The response's NLL per token, and whether greedy decoding reproduces it.

    lm-eval returns the log-probability summed over the continuation's tokens; dividing by
    the number of tokens scored (the document's ``continuation_ids``, the very ids the model
    was given) makes responses of different lengths comparable. The task's score is the
    mean over documents, so every test prompt weighs the same and each has a value of its
    own for paired comparisons.

    lm-eval's ``is_greedy`` is true when every continuation token is the argmax given the
    tokens before it: greedy decoding from the prompt reproduces the response token for
    token (up to the end of the scored tokens), which is what ``greedy_match`` reports.
    """
    (loglikelihood, is_greedy) = results[0]
    return {
        "nll": -loglikelihood / len(doc["continuation_ids"]),
        "greedy_match": float(is_greedy),
    }
