"""Offline honesty: a task whose hub data set cannot be reached stops the job before any work.

lm-eval downloads a task's data set when the task is built, which is after the model is
loaded and possibly after other tasks ran for minutes. Asking ``datasets`` for each data
set's builder first (served from the local cache when offline, from the hub's metadata when
online, with no data downloaded) turns "no network" into one clear error up front.
"""

from __future__ import annotations

import datasets
from lm_eval.tasks import TaskManager

from evaluation.errors import DatasetUnavailable
from evaluation.plan import TaskPlan
from evaluation.tasks_index import hub_datasets


def check_reachable(manager: TaskManager, plans: list[TaskPlan]) -> None:
    """Raise :class:`DatasetUnavailable` for the first task whose data cannot be had."""
    for plan in plans:
        if plan.is_local:
            continue
        sets = (
            {plan.dataset_path: None}
            if plan.dataset_path is not None
            else hub_datasets(manager, plan.base)
        )
        for path, config_name in sets.items():
            try:
                datasets.load_dataset_builder(path, config_name)
            except Exception as err:
                raise DatasetUnavailable(_message(plan.name, path, config_name, err)) from err


def _message(task: str, path: str, config_name: str | None, err: Exception) -> str:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    args = f"{path!r}" + (f", {config_name!r}" if config_name else "")
    return (
        f"eval task {task!r} needs the Hugging Face data set {path!r}, which is not in the "
        f"local cache and cannot be reached ({reason}). Ways out: allow the network (unset "
        "HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); or download it once where the hub is reachable "
        f'(python -c "import datasets; datasets.load_dataset({args})") so it is cached; or '
        f"point eval.settings.{task}.dataset_path at a local copy; or score on the tasks that "
        "ship with the project: eval=embedded."
    )
