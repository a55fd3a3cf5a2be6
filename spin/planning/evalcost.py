"""Approximate size of the evaluation tasks a plan scores every model on: estimates from
per-task document counts and lengths, not measurements."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from evaluation.lm_eval_adapter import load_task_yaml
from evaluation.plan import TASKS_DIR, TaskPlan

# Subword tokenizers average about four characters per token on English text; the tiny
# test model's tokenizer is character-level.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class TaskCost:
    """Approximate size of one evaluation task: estimates, not measurements."""

    docs: int
    choices: float  # log-likelihood requests per document (1 for a generative task)
    example_tokens: float  # one question with its answer: the unit a few-shot context repeats
    prefix_tokens: float = 0.0  # fixed text every request starts with
    generated_tokens: int = 0  # generation budget per document (generative tasks)
    subtasks: int = 1  # eval.limit counts documents per subtask

    def with_budget(self, max_new_tokens: int | None) -> TaskCost:
        if max_new_tokens is None or not self.generated_tokens:
            return self
        return replace(self, generated_tokens=max_new_tokens)


# Open LLM Leaderboard v1 tasks: documents of the scored split (ARC-challenge test, TruthfulQA
# validation, Winogrande-xl validation, GSM8k test, HellaSwag validation, MMLU test over 57
# subjects); answer choices per document; tokens of one example in a Llama/Mistral tokenizer
# (rough averages); GSM8k generates up to lm-eval's default budget of 256 tokens.
LEADERBOARD = {
    "arc_challenge": TaskCost(1172, 4, 45),
    "truthfulqa_mc2": TaskCost(817, 7, 40, prefix_tokens=210),
    "winogrande": TaskCost(1267, 2, 30),
    "gsm8k": TaskCost(1319, 1, 160, generated_tokens=256),
    "hellaswag": TaskCost(10042, 4, 100),
    "mmlu": TaskCost(14042, 4, 100, prefix_tokens=15, subtasks=57),
}


DEFAULT_GEN_TOKENS = 256  # lm-eval's generation budget when a task sets none


@dataclass(frozen=True)
class TaskEstimate:
    """One planned evaluation task, sized for one model."""

    name: str
    num_fewshot: int
    docs: int | None
    tokens: float | None
    generated_tokens: int
    source: str


def task_cost(plan: TaskPlan, chars_per_token: float) -> TaskCost | None:
    """Approximate size of a planned task: the leaderboard table, or its local files."""
    if plan.base in LEADERBOARD and not plan.is_user_set:
        return LEADERBOARD[plan.base]
    test = plan.data_files.get("test")
    if test is None or not test.is_file():
        return None
    docs = [json.loads(line) for line in test.read_text().splitlines() if line.strip()]
    if not docs:
        return None
    sizes = [_doc_size(doc) for doc in docs]
    generated = _generation_budget(plan.base)
    return TaskCost(
        docs=len(docs),
        choices=1 if generated else sum(c for _, c in sizes) / len(sizes),
        example_tokens=sum(chars for chars, _ in sizes) / len(sizes) / chars_per_token,
        generated_tokens=generated,
    )


def _doc_size(doc: Any) -> tuple[float, int]:
    """Characters of one request (question plus one average answer choice) and the number
    of choices (strings in a list)."""
    chars, choices = 0.0, 1
    for value in doc.values() if isinstance(doc, dict) else []:
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            chars += sum(len(v) for v in value) / len(value)
            choices = len(value)
        elif isinstance(value, dict):
            inner, inner_choices = _doc_size(value)
            chars += inner
            choices = max(choices, inner_choices)
    return chars, choices


def _generation_budget(task: str) -> int:
    """Generation budget of a project task file (0 for a multiple-choice task)."""
    path = TASKS_DIR / f"{task}.yaml"
    if not path.is_file():
        return 0
    config = load_task_yaml(path)
    if config.get("output_type") != "generate_until":
        return 0
    return int(config.get("generation_kwargs", {}).get("max_gen_toks", DEFAULT_GEN_TOKENS))


def estimate_task(plan: TaskPlan, eval_cfg: Any, chars_per_token: float) -> TaskEstimate:
    """Documents and tokens of one task for one model, honouring ``eval.limit``."""
    shots = plan.num_fewshot or 0
    cost = task_cost(plan, chars_per_token)
    if cost is None:
        return TaskEstimate(plan.name, shots, None, None, 0, "no size estimate")
    cost = cost.with_budget(eval_cfg.max_new_tokens)
    docs = cost.docs
    if eval_cfg.limit is not None:
        docs = min(docs, eval_cfg.limit * cost.subtasks)
    per_request = cost.prefix_tokens + (shots + 1) * cost.example_tokens
    tokens = docs * (cost.choices * per_request + cost.generated_tokens)
    source = "leaderboard table" if plan.base in LEADERBOARD else "local files"
    return TaskEstimate(plan.name, shots, docs, tokens, cost.generated_tokens, source)
