"""Every use of lm-eval's private names, in one place, each behind one small function.

lm-eval's public API covers what the project asks of it except four things, for which it
offers only private names:

- reading a task file with its ``include`` chain merged but its ``!function`` tags left
  unresolved (``lm_eval.tasks._yaml_loader.load_yaml``), to read a task's data files and
  generation settings before anything is built;
- a registered task's definition and a tag's members, held by the index entries
  ``TaskManager.task_index`` hands out (``lm_eval.tasks._index.Entry``: ``yaml_path``,
  ``cfg``, ``tags``);
- building a registered task with a patch of its definition (``TaskManager._factory.build``):
  ``TaskManager.load`` takes an inline dict as a whole definition, not as a patch;
- generating without the EOS text among a task's stop sequences, as lm-eval 0.4.0 did:
  ``HFLM.generate_until`` adds it through the module's ``handle_stop_sequences``
  (``lm_eval.models.huggingface.handle_stop_sequences``), with no setting to decline it.

Whether a name is a tag or a group is asked through the public ``all_tags``/``all_groups``.
A release that renames one of the private names fails here with :class:`LmEvalChanged`
naming it, and tests/test_lm_eval_adapter.py checks each of them against the installed
release (the stop sequences, through the ids generation is handed, tests/test_v040_tokens.py),
which must lie in :data:`TESTED_RANGE` (pinned in pyproject.toml).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.errors import LmEvalChanged

if TYPE_CHECKING:
    from lm_eval.api.group import Group
    from lm_eval.api.task import Task
    from lm_eval.tasks import TaskManager

# The lm-eval releases the private names below were checked against; pyproject.toml pins it.
TESTED_RANGE = ">=0.4.13,<0.5"


def _private(owner: Any, dotted: str, shown: str | None = None) -> Any:
    """``owner``'s private attribute path ``dotted`` (a module's object when ``owner`` is
    None), or :class:`LmEvalChanged` naming it (as ``shown``) when the release lacks it."""
    try:
        if owner is None:
            module, _, name = dotted.rpartition(".")
            return getattr(importlib.import_module(module), name)
        for name in dotted.split("."):
            owner = getattr(owner, name)
        return owner
    except (ImportError, AttributeError) as err:
        from lm_eval import __version__

        raise LmEvalChanged(
            f"lm-eval {__version__} has no {shown or dotted}, which the project's evaluation uses "
            f"({err}); install a tested release: pip install 'lm-eval{TESTED_RANGE}'"
        ) from err


def load_task_yaml(path: Path) -> dict[str, Any]:
    """A task file's definition with its includes merged and ``!function`` tags unresolved."""
    load_yaml = _private(None, "lm_eval.tasks._yaml_loader.load_yaml")
    return load_yaml(path, resolve_func=False)


def _entry_field(manager: TaskManager, name: str, field: str) -> Any:
    """A field of the index entry the public ``task_index`` holds under ``name``."""
    return _private(manager.task_index[name], field, f"lm_eval.tasks._index.Entry.{field}")


def registered_config(manager: TaskManager, name: str) -> dict[str, Any]:
    """The definition registered under ``name``: its task file read as
    :func:`load_task_yaml` reads it, or the inline config of a task defined without one."""
    path = _entry_field(manager, name, "yaml_path")
    return load_task_yaml(path) if path is not None else _entry_field(manager, name, "cfg")


def tag_members(manager: TaskManager, name: str) -> list[str]:
    """The tasks a tag stands for, by name."""
    return sorted(_entry_field(manager, name, "tags"))


def is_tag(manager: TaskManager, name: str) -> bool:
    """Public API; here so that every question about the registry is asked in one place."""
    return name in manager.all_tags


def is_group(manager: TaskManager, name: str) -> bool:
    return name in manager.all_groups


def build_patched(
    manager: TaskManager, name: str, overrides: dict[str, Any]
) -> Task | Group | list[Task]:
    """The task or group registered under ``name``, its definition patched with
    ``overrides`` the way a group patches its members, its documents loaded."""
    build = _private(manager, "_factory.build", "lm_eval.tasks.TaskManager._factory.build")
    return build(manager.task_index[name], overrides=overrides, registry=manager.task_index)


STOP_SEQUENCES = "lm_eval.models.huggingface.handle_stop_sequences"


@contextmanager
def eos_not_a_stop() -> Iterator[None]:
    """Within it, HFLM's ``generate_until`` stops at the task's own stop sequences alone: the
    EOS text it adds to them is not added (the model's end-of-sequence token still ends a
    generation, as transformers' ``generate`` stops there)."""
    handle = _private(None, STOP_SEQUENCES)
    module = importlib.import_module(STOP_SEQUENCES.rpartition(".")[0])

    def without_eos(until: Any, eos: str | None) -> list[str]:
        return handle(until, eos=None)

    module.handle_stop_sequences = without_eos
    try:
        yield
    finally:
        module.handle_stop_sequences = handle
