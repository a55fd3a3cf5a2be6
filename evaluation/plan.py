"""What the ``eval`` config section asks lm-eval to run, resolved before any work.

A :class:`TaskPlan` is one requested task with everything its score depends on: few-shot
count and the split its examples come from, stop sequences, the metric read from lm-eval's
results, and where its documents come from (the hub, a local copy, the files that ship in
``evaluation/tasks``, or a user's JSONL file). The artifact spec is built from plans, so a
model is scored again exactly when one of these changes, and never because of a setting that
does not change the numbers (batch size). Settings added since the first scores enter the
spec only when set, so scores made before them keep their keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.errors import EvalConfigError
from evaluation.lm_eval_adapter import load_task_yaml

# What an evaluation artifact holds; raised when its contents change, so models scored
# before are scored again. 2: per-document values and stderr of each task's metric.
RESULTS_FORMAT = 2

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
# The embedded task files name their data relative to the directory above evaluation/.
PROJECT_ROOT = TASKS_DIR.parents[1]
EMBEDDED = tuple(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))
# The held-out NLL task (evaluation/heldout.py): documents come from the chain, never from
# eval.tasks, so it is kept apart from the embedded tasks a user may list.
HELDOUT_DIR = TASKS_DIR / "heldout"
HELDOUT_TASK = "response_nll"
# The exact world's divergences (evaluation/exact.py): documents from the chain, likewise.
# Its definition lives outside TASKS_DIR, whose content is part of every embedded task's key.
EXACT_TASK = "world_exact"
EXACT_DIR = Path(__file__).resolve().parent / "diagnostics" / "world"
# Diagnostics: tasks whose documents the chain writes, reported beside the scores in no
# average, by the folder of their task definition.
DIAGNOSTICS = {HELDOUT_TASK: HELDOUT_DIR, EXACT_TASK: EXACT_DIR}
# How a group's score averages its subtasks (eval.group_average): each subtask once, the
# default, or each document once.
GROUP_AVERAGES = ("subtasks", "documents")
# Field names of each embedded task's documents, the names a user's ``fields`` maps from.
TEMPLATE_FIELDS = {
    "arith_gsm": ("question", "answer"),
    "arith_mc2": ("question", "choices", "labels"),
}


@dataclass(frozen=True)
class TaskPlan:
    """One requested task, resolved from ``eval.tasks`` and ``eval.settings``."""

    name: str
    # The lm-eval task (or group) whose definition is used: ``name`` itself, or the embedded
    # task a user's JSONL set borrows its prompt and metric from.
    base: str
    num_fewshot: int | None
    metric: str | None
    dataset_path: str | None = None
    # split -> local file, for embedded tasks and user sets
    data_files: dict[str, Path] = field(default_factory=dict)
    # template field -> the user's field
    fields: dict[str, str] = field(default_factory=dict)
    # The split few-shot examples are drawn from; None: the task's own choice.
    fewshot_split: str | None = None
    # Stop sequences of a generative task; None: the task's own.
    until: tuple[str, ...] | None = None

    @property
    def is_user_set(self) -> bool:
        return self.base != self.name and not self.is_diagnostic

    @property
    def is_diagnostic(self) -> bool:
        """A diagnostic on documents the chain writes (the held-out NLL, the exact world's
        divergences): beside the scores, in no average."""
        return self.base in DIAGNOSTICS

    @property
    def is_local(self) -> bool:
        """True when no hub data set is involved."""
        return bool(self.data_files) or (
            self.dataset_path is not None and Path(self.dataset_path).exists()
        )

    def sources(self) -> list[Path]:
        """The local files and folders the score depends on."""
        if self.base in EMBEDDED and not self.is_user_set:
            return [TASKS_DIR]
        paths = list(self.data_files.values())
        if self.is_diagnostic:
            paths.append(DIAGNOSTICS[self.base])
        if self.is_user_set:
            paths.append(TASKS_DIR / f"{self.base}.yaml")
        if self.dataset_path is not None and Path(self.dataset_path).exists():
            paths.append(Path(self.dataset_path))
        return paths


def plan_tasks(cfg: Any) -> list[TaskPlan]:
    """The tasks of the ``eval`` section, checked; raises :class:`EvalConfigError` naming
    the key."""
    if cfg.limit is not None and cfg.limit <= 0:
        raise EvalConfigError(f"eval.limit={cfg.limit} must be a positive number of documents")
    if cfg.max_new_tokens is not None and cfg.max_new_tokens <= 0:
        raise EvalConfigError(f"eval.max_new_tokens={cfg.max_new_tokens} must be positive")
    if cfg.group_average not in GROUP_AVERAGES:
        raise EvalConfigError(
            f"eval.group_average={cfg.group_average!r}: expected one of {list(GROUP_AVERAGES)}"
        )
    names = list(cfg.tasks)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvalConfigError(f"eval.tasks lists {duplicates} more than once")
    return [_plan(name, cfg.settings.get(name)) for name in names]


def _plan(name: str, settings: Any) -> TaskPlan:
    num_fewshot = settings.num_fewshot if settings is not None else None
    if num_fewshot is not None and num_fewshot < 0:
        raise EvalConfigError(f"eval.settings.{name}.num_fewshot={num_fewshot} must be >= 0")
    metric = settings.metric if settings is not None else None
    if settings is not None and settings.path is not None:
        return _user_plan(name, settings)
    if settings is not None and (settings.template or settings.fields or settings.fewshot_path):
        raise EvalConfigError(
            f"eval.settings.{name}: template, fields and fewshot_path describe a user's JSONL "
            f"set and need eval.settings.{name}.path=FILE"
        )
    dataset_path = settings.dataset_path if settings is not None else None
    data_files = _embedded_files(name) if name in EMBEDDED and dataset_path is None else {}
    fewshot_split = settings.fewshot_split if settings is not None else None
    if data_files and fewshot_split is not None and fewshot_split not in data_files:
        raise EvalConfigError(
            f"eval.settings.{name}.fewshot_split={fewshot_split!r}: the task's files have the "
            f"splits {sorted(data_files)}"
        )
    until = _until(name, settings.until) if settings is not None else None
    return TaskPlan(
        name,
        name,
        num_fewshot,
        metric,
        dataset_path,
        data_files,
        fewshot_split=fewshot_split,
        until=until,
    )


def _until(name: str, until: Any) -> tuple[str, ...] | None:
    if until is None:
        return None
    if not all(isinstance(stop, str) and stop for stop in until):
        raise EvalConfigError(
            f"eval.settings.{name}.until={list(until)!r} must be a list of non-empty strings"
        )
    return tuple(until)


def _embedded_files(name: str) -> dict[str, Path]:
    config = load_task_yaml(TASKS_DIR / f"{name}.yaml")
    files = config["dataset_kwargs"]["data_files"]
    return {split: PROJECT_ROOT / path for split, path in files.items()}


def _user_plan(name: str, settings: Any) -> TaskPlan:
    key = f"eval.settings.{name}"
    if settings.fewshot_split is not None or settings.until is not None:
        raise EvalConfigError(
            f"{key}: fewshot_split and until apply to lm-eval's and the embedded tasks; a "
            f"user's set takes its examples from {key}.fewshot_path and its template's stops"
        )
    if settings.template not in TEMPLATE_FIELDS:
        raise EvalConfigError(
            f"{key}.template={settings.template!r}: a user's set is scored like one of the "
            f"embedded tasks; expected one of {sorted(TEMPLATE_FIELDS)}"
        )
    if name in EMBEDDED:
        raise EvalConfigError(f"eval.tasks: {name!r} is an embedded task; name your set otherwise")
    expected = TEMPLATE_FIELDS[settings.template]
    unknown = sorted(set(settings.fields) - set(expected))
    if unknown:
        raise EvalConfigError(
            f"{key}.fields has {unknown}; {settings.template} documents have the fields "
            f"{list(expected)} (map each to your file's field name)"
        )
    files = {"test": Path(settings.path)}
    if settings.fewshot_path is not None:
        files["train"] = Path(settings.fewshot_path)
    elif settings.num_fewshot:
        raise EvalConfigError(
            f"{key}.num_fewshot={settings.num_fewshot} needs examples to draw from: set "
            f"{key}.fewshot_path=FILE (same fields), or num_fewshot=0"
        )
    for split, path in files.items():
        if not path.is_file():
            what = "path" if split == "test" else "fewshot_path"
            raise EvalConfigError(f"{key}.{what}={str(path)!r} is not a file")
    fields = {f: settings.fields.get(f, f) for f in expected}
    num_fewshot = settings.num_fewshot if settings.num_fewshot is not None else 0
    return TaskPlan(
        name, settings.template, num_fewshot, settings.metric, None, files, dict(fields)
    )


def content_hash(paths: list[Path]) -> str:
    """Hash of the files under ``paths`` (names and bytes), so edited data re-scores."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(root.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def system_turn(cfg: Any) -> str | None:
    """The system turn rendered before every chat-formatted prompt: ``eval.system_prompt``
    under the chat template, and None without it (a plain-text prompt has no turns)."""
    return cfg.system_prompt if cfg.apply_chat_template else None


def _when_set(**settings: Any) -> dict[str, Any]:
    """The settings that are not None: what a spec gains from a setting added later."""
    return {key: value for key, value in settings.items() if value is not None}


def eval_spec(cfg: Any, plans: list[TaskPlan]) -> dict[str, Any]:
    """Exactly the settings and data that determine the scores (the artifact spec)."""
    from lm_eval import __version__ as lm_eval_version

    return {
        "results_format": RESULTS_FORMAT,
        "lm_eval": lm_eval_version,
        "tasks": {
            p.name: {
                "base": p.base,
                "num_fewshot": p.num_fewshot,
                "metric": p.metric,
                "dataset_path": p.dataset_path,
                "fields": p.fields,
                "data": content_hash(p.sources()) if p.sources() else None,
            }
            | _when_set(
                fewshot_split=p.fewshot_split, until=None if p.until is None else list(p.until)
            )
            for p in plans
        },
        "limit": cfg.limit,
        "max_new_tokens": cfg.max_new_tokens,
        "apply_chat_template": cfg.apply_chat_template,
        "seed": cfg.seed,
    } | _when_set(
        system_prompt=system_turn(cfg),
        add_bos_token=cfg.add_bos_token,
        eos_stop=None if cfg.eos_stop else False,
        group_average=None if cfg.group_average == GROUP_AVERAGES[0] else cfg.group_average,
    )


def by_fewshot(plans: list[TaskPlan]) -> list[tuple[int | None, list[TaskPlan]]]:
    """Plans grouped by few-shot count: lm-eval takes one count per call."""
    groups: dict[int | None, list[TaskPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.num_fewshot, []).append(plan)
    return sorted(groups.items(), key=lambda item: -1 if item[0] is None else item[0])
