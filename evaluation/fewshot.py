"""Where each task's few-shot examples came from, read off the task objects lm-eval built.

A task's YAML often names no few-shot split (ARC, HellaSwag and Winogrande do not), and then
lm-eval's own rule decides: the training split, else the validation split, else the test
split (``Task.fewshot_docs``). The record states the split that rule, or an explicit
``fewshot_split``, resolved to on the built task, the file behind it when the task reads
local files, the sampler lm-eval drew with and the size of the pool, so a results.json says
what was run rather than what was asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.api.group import Group
from lm_eval.api.samplers import SAMPLER_REGISTRY
from lm_eval.api.task import Task

from evaluation.plan import PROJECT_ROOT


def leaf_tasks(spec: Task | Group) -> list[Task]:
    """The tasks lm-eval runs for ``spec``: itself, or a group's members at any depth."""
    return spec.get_all_tasks() if isinstance(spec, Group) else [spec]


def fewshot_split(task: Task) -> str | None:
    """The split ``task`` draws examples from, by lm-eval's rule; None when its examples are
    given in its config (``fewshot_config.samples``)."""
    config = task.fewshot_cfg
    if config.split is not None:
        return config.split
    if config.samples is not None:
        return None
    if task.has_training_docs():
        return task.config.training_split
    if task.has_validation_docs():
        return task.config.validation_split
    return task.config.test_split


def _shown(path: str, work: Path) -> str:
    """``path`` relative to the evaluation's directory (a converted user set, kept beside
    the scores) or to the project (an embedded task's file), else as it is."""
    for root in (work, PROJECT_ROOT):
        if Path(path).is_relative_to(root):
            return Path(path).relative_to(root).as_posix()
    return path


def _sampler_name(task: Task) -> str:
    """The sampler's name in lm-eval's registry ("default" draws at random, "first_n" takes
    the first examples in order), or its class name for one outside the registry."""
    names = {cls: name for name, cls in SAMPLER_REGISTRY.items()}
    return names.get(type(task.sampler), type(task.sampler).__qualname__)


def task_source(task: Task, shots: int, work: Path) -> dict[str, Any]:
    """One task's few-shot source; with no shots, only their count."""
    if shots == 0:
        return {"num_fewshot": 0}
    split = fewshot_split(task)
    files = (task.config.dataset_kwargs or {}).get("data_files") or {}
    return {
        "num_fewshot": shots,
        "split": split,
        "file": _shown(str(files[split]), work) if split in files else None,
        "dataset": task.config.dataset_path,
        "dataset_name": task.config.dataset_name,
        "sampler": _sampler_name(task),
        "pool": len(task.sampler.fewshot_docs()),
    }


def plan_source(spec: Task | Group, n_shot: dict[str, int], work: Path) -> dict[str, Any]:
    """The few-shot source of a planned task or group: one record when every member drew
    alike (a group's members differ only in their data set's subset), else one per member.
    ``n_shot`` is lm-eval's record of the shots each task was run with."""
    records = {
        task.task_name: task_source(task, n_shot[task.task_name], work) for task in leaf_tasks(spec)
    }
    if len(records) == 1:
        return next(iter(records.values()))
    shared = [{k: v for k, v in r.items() if k != "dataset_name"} for r in records.values()]
    if all(r == shared[0] for r in shared):
        return shared[0] | {"subtasks": len(records)}
    return records
