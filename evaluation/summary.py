"""One number per task, and their average, read from lm-eval's results the leaderboard way.

A group's score is the plain mean of its leaf tasks' metric: the Open LLM Leaderboard v1
reports MMLU as the mean over its 57 subjects, whereas lm-eval's own ``mmlu`` row weights
subjects by their size. The average is the plain mean of the task scores.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from evaluation.plan import TaskPlan


class ResultsError(ValueError):
    """lm-eval's results lack what a plan asks for (a metric the task does not compute)."""


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


def task_score(plan: TaskPlan, output: dict[str, Any]) -> dict[str, Any]:
    """A plan's score from the output of the ``simple_evaluate`` call that ran it."""
    tasks = leaves(plan.name, output.get("group_subtasks", {}))
    key = _metric_key(plan, output["results"][tasks[0]])
    values = [output["results"][task][key] for task in tasks]
    shots = sorted({output["n-shot"][task] for task in tasks})
    return {
        "metric": key.split(",")[0],
        "key": key,
        "value": fmean(values),
        "num_fewshot": shots[0] if len(shots) == 1 else shots,
        "n": sum(output["n-samples"][task]["effective"] for task in tasks),
        "subtasks": len(tasks),
    }


def summarize(plans: list[TaskPlan], outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-task scores and their average; ``outputs`` maps each plan's name to its call's output."""
    tasks = {plan.name: task_score(plan, outputs[plan.name]) for plan in plans}
    return {"tasks": tasks, "average": fmean(t["value"] for t in tasks.values())}


def flat_scores(summary: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` -> value, plus ``average``: what is logged and tabulated."""
    scores = {f"{name}/{t['metric']}": t["value"] for name, t in summary["tasks"].items()}
    return {**scores, "average": summary["average"]}
