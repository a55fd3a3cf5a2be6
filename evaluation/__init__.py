"""Scoring models with lm-eval: the paper's leaderboard tasks and tasks that ship offline.

:mod:`evaluation.plan` resolves the ``eval`` config section into task plans (and the
artifact spec), :mod:`evaluation.runner` checks them and runs them on a loaded model,
:mod:`evaluation.summary` reads one score per task (with its standard error and
per-document values) and their average, :mod:`evaluation.fewshot` records where each
task's few-shot examples came from, and ``evaluation/tasks`` holds the embedded lm-eval task
files (usable with ``lm_eval --include_path evaluation/tasks`` too), built by
:mod:`spin.data.eval_tasks`. Nothing here imports ``spin``: the package knows models and
lm-eval, not the chain, and its errors are in :mod:`evaluation.errors`.
"""

from evaluation.errors import DatasetUnavailable, EvalConfigError, ResultsError
from evaluation.plan import TaskPlan, eval_spec, plan_tasks
from evaluation.runner import prepare, run_tasks
from evaluation.summary import flat_items, flat_scores, flat_stderr

__all__ = [
    "DatasetUnavailable",
    "EvalConfigError",
    "ResultsError",
    "TaskPlan",
    "eval_spec",
    "flat_items",
    "flat_scores",
    "flat_stderr",
    "plan_tasks",
    "prepare",
    "run_tasks",
]
