"""One number per task, and their average, read from lm-eval's results the leaderboard way.

A group's score is by default the plain mean of its leaf tasks' metric: the Open LLM
Leaderboard v1 reports MMLU as the mean over its 57 subjects. Averaged over documents
(``eval.group_average=documents``), it is the mean over all its leaves' documents, each leaf
weighted by its number of documents, as lm-eval 0.4.0 aggregated every group (and lm-eval's
own ``mmlu`` row still does). The average is the plain mean of the task scores.

Beside each score the summary keeps lm-eval's standard error of it (``stderr``) and every
document's value of the metric (``items``, in ``doc_id`` order; for a group averaged over
subtasks, a mapping of each leaf task to its list; for one averaged over documents, one
list, leaf after leaf in name order, whose plain mean is the score), so two models scored
on the same documents can be compared pair by pair (spin/reporting/significance.py).

The diagnostics report beside the scores, under ``heldout``, in no average: the held-out NLL
task (:mod:`evaluation.heldout`) a loss and a fraction, flat names ``<data>_nll`` and
``<data>_greedy_match``; the exact world's task (:mod:`evaluation.exact`) its divergences,
``<data>_kl_fwd`` and the rest.
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import fmean
from typing import Any

from evaluation import exact, heldout
from evaluation.errors import ResultsError
from evaluation.plan import HELDOUT_TASK, TaskPlan


def leaves(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    """The tasks under ``name``, through nested groups (``name`` itself for a task)."""
    children = group_subtasks.get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in leaves(child, group_subtasks)]


def _metric_key(plan: TaskPlan, task_results: dict[str, Any]) -> str:
    keys = [k for k in task_results if "," in k and "_stderr," not in k]
    key = plan.metric or (keys[0] if keys else None)
    if key not in keys:
        raise ResultsError(
            f"eval.settings.{plan.name}.metric={key!r} is not among the metrics lm-eval "
            f"reported for it: {keys}"
        )
    return key


def _number(value: Any) -> float | None:
    """``value`` as a float when it is one number (lm-eval writes "N/A" for a missing
    stderr, and some metrics keep tuples per document for a corpus-level aggregate)."""
    if isinstance(value, str):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def document_values(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list]]:
    """Per task and ``<metric>,<filter>`` results key, each document's value by ``doc_id``.

    ``samples`` is ``simple_evaluate``'s per-sample output (``log_samples=True``). A metric
    whose per-document values are not numbers is left out.
    """
    values: dict[str, dict[str, list]] = {}
    for task, records in samples.items():
        by_key: dict[str, list[tuple[int, float | None]]] = {}
        for record in records:
            for metric in record["metrics"]:
                key = f"{metric},{record['filter']}"
                by_key.setdefault(key, []).append((record["doc_id"], _number(record[metric])))
        values[task] = {
            key: [value for _, value in sorted(pairs, key=lambda pair: pair[0])]
            for key, pairs in by_key.items()
            if all(value is not None for _, value in pairs)
        }
    return values


def _stderr(
    key: str, tasks: list[str], weights: list[float], results: dict[str, Any]
) -> float | None:
    """Standard error of the mean over ``tasks`` of their metric ``key`` weighted by
    ``weights``: the leaves' errors combined as independent (None where lm-eval gave none,
    e.g. for one document)."""
    metric, _, filter_name = key.partition(",")
    errors = [_number(results[task].get(f"{metric}_stderr,{filter_name}")) for task in tasks]
    if any(error is None for error in errors):
        return None
    combined = sum((w * error) ** 2 for w, error in zip(weights, errors, strict=True))
    return math.sqrt(combined) / sum(weights)


def _weighted_mean(values: list[float], weights: list[int]) -> float:
    return math.fsum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


def _items(
    key: str, tasks: list[str], group: bool, by_documents: bool, output: dict[str, Any]
) -> Any:
    """Each document's value of ``key``: a list for a task, a list per leaf for a group
    (one list, leaf after leaf in name order, for a group averaged over documents); None
    where lm-eval kept no numeric value per document."""
    stored = output.get("items", {})
    found = {task: stored.get(task, {}).get(key) for task in tasks}
    if any(values is None for values in found.values()):
        return None
    if not group:
        return found[tasks[0]]
    if by_documents:
        return [value for task in sorted(found) for value in found[task]]
    return found


def task_score(
    plan: TaskPlan, output: dict[str, Any], by_documents: bool = False
) -> dict[str, Any]:
    """A plan's score from the output of the ``simple_evaluate`` call that ran it; a group's
    the plain mean of its leaves, or with ``by_documents`` of all their documents."""
    groups = output.get("group_subtasks", {})
    tasks = leaves(plan.name, groups)
    key = _metric_key(plan, output["results"][tasks[0]])
    values = [output["results"][task][key] for task in tasks]
    sizes = [output["n-samples"][task]["effective"] for task in tasks]
    weights = sizes if by_documents else [1] * len(tasks)
    shots = sorted({output["n-shot"][task] for task in tasks})
    score = {
        "metric": key.split(",")[0],
        "key": key,
        "value": _weighted_mean(values, sizes) if by_documents else fmean(values),
        "stderr": _stderr(key, tasks, weights, output["results"]),
        "num_fewshot": shots[0] if len(shots) == 1 else shots,
        "n": sum(sizes),
        "subtasks": len(tasks),
    }
    items = _items(key, tasks, bool(groups.get(plan.name)), by_documents, output)
    return score if items is None else score | {"items": items}


def diagnostic_scores(plan: TaskPlan, output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A diagnostic plan's metrics, each read like a task score, by flat name."""
    names = heldout.reported_names if plan.base == HELDOUT_TASK else exact.reported_names
    return {
        name: task_score(replace(plan, metric=key), output) for key, name in names(plan).items()
    }


def summarize(
    plans: list[TaskPlan], outputs: dict[str, dict[str, Any]], by_documents: bool = False
) -> dict[str, Any]:
    """Per-task scores and their average, and the held-out NLL metrics beside them (in no
    average); ``outputs`` maps each plan's name to its call's output, ``by_documents``
    averages a group over its documents (eval.group_average=documents)."""
    tasks = {
        p.name: task_score(p, outputs[p.name], by_documents) for p in plans if not p.is_diagnostic
    }
    summary: dict[str, Any] = {"tasks": tasks}
    if tasks:  # the held-out metrics alone have no average
        summary["average"] = fmean(t["value"] for t in tasks.values())
    heldout = {}
    for plan in (p for p in plans if p.is_diagnostic):
        heldout |= diagnostic_scores(plan, outputs[plan.name])
    return summary | ({"heldout": heldout} if heldout else {})


def _named(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every score of a summary by its flat name: ``<task>/<metric>``, then each held-out
    metric's own name."""
    named = {f"{n}/{t['metric']}": t for n, t in summary["tasks"].items()}
    return named | summary.get("heldout", {})


def flat_scores(summary: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` -> value, plus ``average``, then the held-out NLL metrics: what is
    logged and tabulated."""
    scores = {f"{name}/{t['metric']}": t["value"] for name, t in summary["tasks"].items()}
    heldout = {name: t["value"] for name, t in summary.get("heldout", {}).items()}
    average = {"average": summary["average"]} if "average" in summary else {}
    return {**scores, **average, **heldout}


def flat_items(summary: dict[str, Any]) -> dict[str, list | dict[str, list]]:
    """``<task>/<metric>`` -> per-document values, for the tasks that have them."""
    return {name: t["items"] for name, t in _named(summary).items() if "items" in t}


def flat_stderr(summary: dict[str, Any]) -> dict[str, float | None]:
    """``<task>/<metric>`` -> lm-eval's standard error of the score (None where unknown)."""
    return {name: t.get("stderr") for name, t in _named(summary).items()}
