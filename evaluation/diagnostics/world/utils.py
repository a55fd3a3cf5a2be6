"""Scoring helpers of the exact world's task (world_exact.yaml); the measures themselves are
:func:`evaluation.exact.exact_metrics`."""

from __future__ import annotations

from evaluation.exact import doc_metrics


def context(doc: dict) -> str:
    return doc["context"]


def choices(doc: dict) -> list[str]:
    return doc["choices"]


def process_results_exact(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """Every exact measure of one prompt from the model's log-likelihood of each response."""
    return doc_metrics(doc, [loglikelihood for loglikelihood, _ in results])
