"""Scoring a model on the eval tasks: once per model and scoring settings, shared by every job
and by evaluate.py (spin/standalone.py), and naming the model it scored."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from evaluation import eval_spec, flat_scores, plan_tasks, prepare, run_tasks
from evaluation.exact import exact_doc, exact_plan
from evaluation.heldout import heldout_doc, heldout_plan
from evaluation.plan import TaskPlan
from spin.artifacts import build_record, read_json, write_json
from spin.data import PromptFormatter
from spin.data.world import World, distinct_prompts
from spin.models import hub_revision, load_tokenizer
from spin.stages.context import Context
from spin.stages.loading import ModelRef
from spin.stages.prompts import formatter

# The key of an evaluation result that holds what its build cost (seconds, peak memory).
BUILD_KEY = "build"


def evaluate(ctx: Context, model: ModelRef) -> dict[str, Any]:
    """Score a model on the eval tasks: once per model and scoring settings, shared by
    every job (the start model is scored once for all jobs that start from it). The
    results name the model that was scored (``summary.model``, see :func:`identity`) and
    carry what scoring it cost (:data:`BUILD_KEY`)."""
    cfg = ctx.cfg
    plans = plan_tasks(cfg.eval)
    if not plans and not cfg.eval.exact:
        return {}
    with tempfile.TemporaryDirectory() as docs:
        if cfg.eval.heldout_nll:
            plans.append(heldout_plan(cfg.data.name, heldout_docs(ctx, model), Path(docs)))
        if cfg.eval.exact:
            plans += exact_plans(ctx, model, Path(docs))
        spec = {"model": model.key, "dtype": cfg.model.dtype}
        spec |= eval_spec(cfg.eval, plans)

        def build(work: Path) -> None:
            prepared = prepare(plans, work)  # fails here, before the model is loaded
            policy, tokenizer = ctx.models.load(model)
            results = run_tasks(prepared, policy, tokenizer, cfg.eval, work / "by_shots")
            results["summary"]["model"] = identity(cfg, model)
            write_json(work / "results.json", results)
            shutil.rmtree(work / "by_shots")

        artifact = ctx.artifact("eval", spec, build)
        return read_json(artifact.path / "results.json") | {BUILD_KEY: build_record(artifact)}


def heldout_docs(ctx: Context, model: ModelRef) -> list[dict[str, Any]]:
    """The data's test split as training formats it (template, system turn, truncation),
    with the token ids training would score: the held-out NLL is then the model's loss on
    real responses exactly as it was trained to produce them. Needs only the tokenizer."""
    cfg = ctx.cfg
    tokenizer = load_tokenizer(model.location, cfg.model.trust_remote_code, cfg.model.revision)
    fmt = formatter(cfg, tokenizer)
    docs = []
    for record in ctx.splits.test:
        prompt, response = record["prompt"], record["response"]
        encoded = fmt.encode(prompt, response, cfg.model.max_prompt_length, cfg.model.max_length)
        cut = encoded["response_mask"].index(1)
        ids = encoded["input_ids"]
        text = (fmt.prompt_text(prompt), fmt.response_text(response, prompt))
        docs.append(heldout_doc(*text, ids[:cut], ids[cut:]))
    fmt.report_cuts("held-out test", len(docs), cfg.model.max_length)
    return docs


def exact_plans(ctx: Context, model: ModelRef, directory: Path) -> list[TaskPlan]:
    """The exact world's two plans: its divergences over the test prompts, and over the
    SPIN prompts (as many as there are test prompts) against the SFT sample too."""
    cfg = ctx.cfg
    world = World(cfg.data.world)
    tokenizer = load_tokenizer(model.location, cfg.model.trust_remote_code, cfg.model.revision)
    fmt = formatter(cfg, tokenizer)
    test = distinct_prompts(ctx.splits.test)
    train = distinct_prompts(ctx.splits.train)[: len(test)]
    sample = ctx.sft_records if cfg.sft.enabled else ctx.splits.train
    parts = {"exact": (test, ctx.splits.test), "train_exact": (train, sample)}
    plans = []
    for name, (prompts, records) in parts.items():
        counts = response_counts(records)
        docs = [exact_world_doc(cfg, fmt, world, p, counts.get(p, Counter())) for p in prompts]
        plans.append(exact_plan(f"{cfg.data.name}_{name}", docs, directory))
    return plans


def response_counts(records: list[dict]) -> dict[str, Counter]:
    """How often each response follows each prompt in ``records``: the empirical
    distribution a model that memorised them would reproduce."""
    counts: dict[str, Counter] = {}
    for record in records:
        counts.setdefault(record["prompt"], Counter())[record["response"]] += 1
    return counts


def exact_world_doc(
    cfg: DictConfig, fmt: PromptFormatter, world: World, prompt: str, counts: Counter
) -> dict[str, Any]:
    """One prompt with every response of the language as training encodes them, ``log
    p_data`` of each and how often the sample pairs it with the prompt."""
    responses = world.responses
    encoded = fmt.encode_pair(prompt, responses, cfg.model.max_prompt_length, cfg.model.max_length)
    cut = encoded[0]["response_mask"].index(1)
    return exact_doc(
        fmt.prompt_text(prompt),
        encoded[0]["input_ids"][:cut],
        responses,
        [e["input_ids"][cut:] for e in encoded],
        world.log_probs(prompt).tolist(),
        [counts[y] for y in responses],
    )


def identity(cfg: DictConfig, model: ModelRef) -> dict[str, Any]:
    """Which model a score belongs to: where it loads from (a directory or a hub id), the
    hub revision (None for a directory, used as it is) and its artifact key. An eval
    artifact is shared by key, so its record names the location it was first scored at."""
    revision = hub_revision(model.location, cfg.model.revision)
    return {"path": model.location, "revision": revision, "key": model.key}


def scores(result: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` -> value and ``average`` of an evaluation result."""
    return flat_scores(result["summary"]) if result else {}
