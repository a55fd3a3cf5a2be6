"""lm-eval's task registry, narrowed to the folders the plans need, and task definitions
with the project's overrides (where a task's documents come from).

Indexing every task lm-eval ships reads ~15k YAML files (seconds to tens of seconds), so the
leaderboard tasks index only their own folders; any other task name falls back to the full
index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lm_eval.tasks
from lm_eval.api.group import Group
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager

from evaluation import lm_eval_adapter as adapter
from evaluation.errors import EvalConfigError
from evaluation.plan import DIAGNOSTICS, EMBEDDED, EXACT_DIR, TASKS_DIR, TaskPlan

LM_EVAL_TASKS = Path(lm_eval.tasks.__file__).parent
# Folders of lm-eval's task tree that define the leaderboard tasks.
FOLDERS = {
    "arc_challenge": "arc",
    "truthfulqa_mc2": "truthfulqa",
    "winogrande": "winogrande",
    "gsm8k": "gsm8k",
    "hellaswag": "hellaswag",
    "mmlu": "mmlu/default",
}


def task_manager(plans: list[TaskPlan]) -> TaskManager:
    """A registry that knows the embedded tasks and every lm-eval task the plans name."""
    outside = {p.base for p in plans if p.base not in (*EMBEDDED, *DIAGNOSTICS)}
    ours = [str(TASKS_DIR), str(EXACT_DIR)]
    if not outside:
        return TaskManager(include_defaults=False, include_path=ours)
    if outside <= set(FOLDERS):
        folders = [str(LM_EVAL_TASKS / FOLDERS[name]) for name in sorted(outside)]
        return TaskManager(include_defaults=False, include_path=[*folders, *ours])
    return TaskManager(include_path=ours)


def _require_registered(manager: TaskManager, name: str) -> None:
    if name not in manager.task_index:
        raise EvalConfigError(
            f"eval.tasks: {name!r} is not an lm-eval task or group; run `lm_eval ls tasks` for "
            f"the names, or use the embedded tasks {list(EMBEDDED)}"
        )


def _overrides(manager: TaskManager, plan: TaskPlan, files: dict[str, Path]) -> dict[str, Any]:
    """The patch of the registered definition that ``plan``'s settings ask for."""
    overrides: dict[str, Any] = {}
    if plan.dataset_path is not None:
        overrides["dataset_path"] = plan.dataset_path
    if files:
        overrides["dataset_kwargs"] = {"data_files": {k: str(v) for k, v in files.items()}}
        if "train" not in files:
            overrides["fewshot_split"] = None
    if plan.fewshot_split is not None:
        overrides["fewshot_split"] = plan.fewshot_split
    if plan.until is not None:
        overrides["generation_kwargs"] = _stopped_at(manager, plan)
    if plan.base != plan.name:
        overrides["task"] = plan.name
    return overrides


def _stopped_at(manager: TaskManager, plan: TaskPlan) -> dict[str, Any]:
    """The task's generation settings with ``plan.until`` as its stop sequences (a patch
    replaces a key whole, so the task's other generation settings are carried over)."""
    config = adapter.registered_config(manager, plan.base)
    if config.get("output_type") != "generate_until":
        raise EvalConfigError(
            f"eval.settings.{plan.name}.until: {plan.base!r} does not generate text (its "
            f"output_type is {config.get('output_type')!r}); stop sequences apply to "
            "generate_until tasks"
        )
    return {**(config.get("generation_kwargs") or {}), "until": list(plan.until)}


def lm_eval_task(
    manager: TaskManager, plan: TaskPlan, data_files: dict[str, Path] | None = None
) -> str | Task | Group:
    """What ``simple_evaluate`` is given for ``plan``: the task (or group) built from its
    registered definition, patched with the plan's overrides, its documents loaded now (so a
    data set that fails to load fails before the model is loaded); a tag's name as it is,
    since a tag is no task lm-eval reports on.

    Built here rather than by ``simple_evaluate`` so the objects are at hand afterwards,
    to record where each task's few-shot examples came from. lm-eval takes an inline config
    dict as a whole definition, not a patch, and hands a group dict's own keys down to its
    members; the registry's builder applies a patch the way a group applies one to its
    members, so the task is built through it.
    """
    _require_registered(manager, plan.base)
    files = data_files if data_files is not None else plan.data_files
    overrides = _overrides(manager, plan, files)
    if adapter.is_tag(manager, plan.base):
        if overrides:
            raise EvalConfigError(
                f"eval.settings.{plan.name}: {plan.base!r} is an lm-eval tag; list its tasks "
                "in eval.tasks to override where their data comes from"
            )
        return plan.name
    try:
        return adapter.build_patched(manager, plan.base, overrides)
    except KeyError as err:
        if plan.fewshot_split is None or err.args[:1] != (plan.fewshot_split,):
            raise
        raise EvalConfigError(
            f"eval.settings.{plan.name}.fewshot_split={plan.fewshot_split!r}: the task's data "
            "set has no such split"
        ) from err


def hub_datasets(manager: TaskManager, name: str) -> dict[str, str | None]:
    """The hub data sets (path -> one config name) a task or group reads by default."""
    _require_registered(manager, name)
    if adapter.is_tag(manager, name):
        children = adapter.tag_members(manager, name)
    elif adapter.is_group(manager, name):
        children = [
            child if isinstance(child, str) else child.get("task") or child.get("group")
            for child in adapter.registered_config(manager, name)["task"]
        ]
    else:
        config = adapter.registered_config(manager, name)
        path = config.get("dataset_path")
        return {path: config.get("dataset_name")} if path else {}
    found: dict[str, str | None] = {}
    for child in children:
        for path, config_name in hub_datasets(manager, child).items():
            found.setdefault(path, config_name)
    return found
