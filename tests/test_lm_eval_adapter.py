"""The private lm-eval names the project uses still do what it relies on in the installed
release (evaluation/lm_eval_adapter.py); a release that changed one fails here by name.

Each test runs an adapter function on the embedded task files (no model, no network), so
it checks behaviour, not only that a name exists: an include merged, a patch applied on top
of the registered definition rather than in place of it.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import lm_eval.tasks._yaml_loader
import pytest
import tomllib
from conftest import ROOT
from lm_eval.tasks import TaskManager
from packaging.requirements import Requirement

from evaluation import lm_eval_adapter as adapter
from evaluation.errors import LmEvalChanged
from evaluation.plan import TASKS_DIR

PRIVATE = {
    "yaml": "lm_eval.tasks._yaml_loader.load_yaml",
    "entry": "lm_eval.tasks._index.Entry (yaml_path, cfg, tags)",
    "build": "lm_eval.tasks.TaskManager._factory.build",
}


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> TaskManager:
    """The embedded tasks, plus a group of one of them defined in its own file."""
    extra = tmp_path_factory.mktemp("group")
    (extra / "arith_group.yaml").write_text("group: arith_group\ntask:\n  - arith_gsm\n")
    return TaskManager(include_defaults=False, include_path=[str(TASKS_DIR), str(extra)])


def test_installed_lm_eval_is_in_the_pinned_and_tested_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [Requirement(d) for d in project["dependencies"] if d.startswith("lm-eval")]
    assert len(pins) == 1, "pyproject.toml must pin lm-eval once"
    assert str(pins[0].specifier) == str(Requirement(f"lm-eval{adapter.TESTED_RANGE}").specifier)
    installed = version("lm-eval")
    assert pins[0].specifier.contains(installed), f"lm-eval {installed} is outside {pins[0]}"


def test_load_task_yaml_merges_includes_and_leaves_functions_unresolved():
    config = adapter.load_task_yaml(TASKS_DIR / "arith_mc2_chat.yaml")
    included = adapter.load_task_yaml(TASKS_DIR / "arith_mc2.yaml")
    assert "include" not in config, f"{PRIVATE['yaml']} no longer merges includes"
    assert config["output_type"] == included["output_type"], PRIVATE["yaml"]
    function = config["process_results"]
    assert isinstance(function, str), f"{PRIVATE['yaml']} resolved a !function tag: {function}"
    assert function.endswith("utils.process_results_mc2"), PRIVATE["yaml"]


def test_registered_config_and_kinds(manager: TaskManager):
    config = adapter.registered_config(manager, "arith_gsm")
    assert config == adapter.load_task_yaml(TASKS_DIR / "arith_gsm.yaml"), PRIVATE["entry"]
    assert adapter.is_tag(manager, "spin_arith")
    assert adapter.is_group(manager, "arith_group")
    assert not adapter.is_tag(manager, "arith_gsm") and not adapter.is_group(manager, "arith_gsm")
    assert adapter.registered_config(manager, "arith_group")["task"] == ["arith_gsm"]
    members = adapter.tag_members(manager, "spin_arith")
    assert {"arith_gsm", "arith_mc2"} <= set(members), f"{PRIVATE['entry']}: tags {members}"


def test_build_patched_applies_the_patch_over_the_registered_definition(
    manager: TaskManager, tmp_path: Path
):
    docs = tmp_path / "docs.jsonl"
    rows = [{"question": f"What is {n}+1?", "answer": f"#### {n + 1}"} for n in range(3)]
    docs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    patch = {"dataset_kwargs": {"data_files": {"test": str(docs)}}, "fewshot_split": None}
    task = adapter.build_patched(manager, "arith_gsm", patch)
    assert task.config.dataset_kwargs == patch["dataset_kwargs"], PRIVATE["build"]
    assert task.config.output_type == "generate_until", f"{PRIVATE['build']} dropped the rest"
    assert [d["question"] for d in task.test_docs()] == [r["question"] for r in rows]


def test_a_release_without_a_private_name_fails_naming_it(
    manager: TaskManager, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delattr(lm_eval.tasks._yaml_loader, "load_yaml")
    with pytest.raises(
        LmEvalChanged, match=r"no lm_eval\.tasks\._yaml_loader\.load_yaml.*lm-eval>="
    ):
        adapter.load_task_yaml(TASKS_DIR / "arith_gsm.yaml")
    monkeypatch.delattr(manager, "_factory")
    with pytest.raises(LmEvalChanged, match=r"no lm_eval\.tasks\.TaskManager\._factory\.build"):
        adapter.build_patched(manager, "arith_gsm", {})
