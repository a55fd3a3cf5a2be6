"""Scores an already loaded model on the planned tasks with lm-eval's ``simple_evaluate``.

The model and tokenizer the chain holds in memory are wrapped once in lm-eval's HFLM, so no
task reloads them. ``simple_evaluate`` takes one few-shot count per call, so tasks are run in
one call per distinct count; given a directory, each call's output is stored there as it
finishes and reused by a later run, so a killed evaluation resumes at the first unfinished
count. Everything that can fail without the model (unknown task, unreachable data set,
malformed user file) is checked by :func:`prepare`, before the model is loaded.

Each call's stored output keeps, in place of lm-eval's per-sample records, only every
document's metric values (``items``, see :func:`evaluation.summary.document_values`): what a
paired comparison of two models on the same documents needs, at a fraction of the size. The
summary records, per task, where its few-shot examples came from (:mod:`evaluation.fewshot`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.api.group import Group
from lm_eval.api.task import Task
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from evaluation.availability import check_reachable
from evaluation.fewshot import plan_source
from evaluation.model import LoadedModel
from evaluation.plan import TaskPlan, by_fewshot, system_turn
from evaluation.summary import document_values, summarize
from evaluation.tasks_index import lm_eval_task, task_manager
from evaluation.userdata import write_converted

log = logging.getLogger(__name__)

# lm-eval's per-sample records (prompts, responses) are large: only their metric values are kept.
DROPPED_KEYS = ("samples", "pretty_env_info")


@dataclass(frozen=True)
class PreparedTasks:
    """Plans ready for lm-eval: the registry and what ``simple_evaluate`` is given per plan."""

    plans: list[TaskPlan]
    manager: TaskManager
    specs: dict[str, str | Task | Group]
    # Where user sets were converted to: the directory the evaluation writes into.
    work: Path


def prepare(plans: list[TaskPlan], work: Path) -> PreparedTasks:
    """Check that every task can run here, convert user sets into ``work`` and load the
    documents of every task whose data location is overridden."""
    manager = task_manager(plans)
    check_reachable(manager, plans)
    specs = {}
    for plan in plans:
        files = None
        if plan.is_user_set:
            files = write_converted(plan.data_files, plan.base, plan.fields, work / plan.name)
        if plan.is_diagnostic:  # kept beside the scores, as what was scored
            (work / plan.name).mkdir(parents=True, exist_ok=True)
            files = {"test": Path(shutil.copy(plan.data_files["test"], work / plan.name))}
        specs[plan.name] = lm_eval_task(manager, plan, files)
    return PreparedTasks(plans, manager, specs, work)


def run_tasks(
    prepared: PreparedTasks, model: Any, tokenizer: Any, cfg: Any, store: Path | None = None
) -> dict[str, Any]:
    """lm-eval's outputs per few-shot count, plus the project's summary of them.

    With ``store``, a directory, each count's output is written there when its call
    finishes, and one written there by an earlier, interrupted run of the same evaluation
    is read instead of computed.
    """
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    lm = LoadedModel(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=cfg.batch_size,
        system_prompt=system_turn(cfg),
        add_bos_token=cfg.add_bos_token,
        eos_stop=cfg.eos_stop,
    )
    start = time.perf_counter()
    outputs: dict[str, dict[str, Any]] = {}
    by_plan: dict[str, dict[str, Any]] = {}
    for shots, plans in by_fewshot(prepared.plans):
        name = f"{shots}-shot" if shots is not None else "task-default-shots"
        stored = store / f"{name}.json" if store is not None else None
        if stored is not None and stored.is_file():
            log.info("Reusing the stored %s evaluation %s", name, stored)
            output = json.loads(stored.read_text())
        else:
            output = _evaluate(lm, [prepared.specs[p.name] for p in plans], shots, prepared, cfg)
            output = _store(output, stored)
        # The summary holds each plan's items; the other metrics' items are not kept twice.
        outputs[name] = {k: v for k, v in output.items() if k != "items"}
        by_plan |= {p.name: output for p in plans}
    summary = summarize(prepared.plans, by_plan, by_documents=cfg.group_average == "documents")
    for plan in (p for p in prepared.plans if not p.is_diagnostic):  # zero-shot by design
        n_shot = by_plan[plan.name]["n-shot"]
        summary["tasks"][plan.name]["fewshot"] = plan_source(
            prepared.specs[plan.name], n_shot, prepared.work
        )
    summary |= {
        "seconds": time.perf_counter() - start,
        "settings": {
            "limit": cfg.limit,
            "batch_size": cfg.batch_size,
            "max_new_tokens": cfg.max_new_tokens,
            "apply_chat_template": cfg.apply_chat_template,
            "system_prompt": system_turn(cfg),
            "seed": cfg.seed,
            "add_bos_token": cfg.add_bos_token,
            "eos_stop": cfg.eos_stop,
            "group_average": cfg.group_average,
            "device": str(model.device),
            "dtype": str(model.dtype),
        },
        "lm_eval_version": lm_eval.__version__,
    }
    return {"summary": summary, "lm_eval": outputs}


def _store(output: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """``output`` as JSON reads it back, written atomically to ``path`` when given.

    A fresh output goes through the same conversion as a stored one (values JSON cannot
    hold become strings), so a resumed evaluation's results equal an uninterrupted one's.
    """
    text = json.dumps(output, default=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json.loads(text)


def _evaluate(
    lm: HFLM, specs: list[Any], shots: int | None, prepared: PreparedTasks, cfg: Any
) -> dict[str, Any]:
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=specs,
        num_fewshot=shots,
        limit=cfg.limit,
        task_manager=prepared.manager,
        log_samples=True,
        system_instruction=system_turn(cfg),
        apply_chat_template=cfg.apply_chat_template,
        fewshot_as_multiturn=cfg.apply_chat_template,
        gen_kwargs={"max_gen_toks": cfg.max_new_tokens} if cfg.max_new_tokens else None,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    kept = {k: v for k, v in output.items() if k not in DROPPED_KEYS}
    return kept | {"items": document_values(output["samples"])}
