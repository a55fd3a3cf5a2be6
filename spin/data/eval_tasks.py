"""Builds the embedded tasks' JSONL files from the project's synthetic arithmetic problems.

The files ship with the project (``evaluation/tasks/data``) so lm-eval's own CLI can run the
tasks too; ``python -m spin.data.eval_tasks`` rewrites them, and a test checks that the shipped
files are exactly what this module builds. The builder lives in ``spin``, beside the generator
it draws from, because ``evaluation`` is a library below ``spin`` and imports nothing from it.
Evaluation items come from the arith TEST split, which is hash-disjoint from every train split
the chain can draw, and the few-shot pool from the TRAIN split, as GSM8k draws its exemplars
from its own train split.

Schemas follow the hub data sets the tasks imitate: GSM8k's ``question``/``answer`` (the
answer ends with ``#### <n>``) and TruthfulQA's ``question``/``mc2_targets`` (candidate
answers with 0/1 labels).

The sizes are set by cost: on two CPU cores a 135M model reads only ~100-250 tokens per
second, and a 2-shot prompt is ~330 tokens, a choice ~105; 32 generations and 48 choice
pairs keep the default embedded evaluation near two minutes per model. The chat-format
tasks drop the exemplars (a prompt is ~76 tokens), which pays for 128 items each: enough
that one problem moves a score by under a point, for experiments that compare models.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from evaluation.plan import TASKS_DIR
from spin.data.arith import generate_arith
from spin.data.mistakes import plausible_mistake

DATA_DIR = TASKS_DIR / "data"
SEED = 0
# The chain's default data difficulty, so the test items are its held-out problems.
DIFFICULTY = [2, 3]
# Exemplars are two-step problems: they show the format at the lowest prompt cost.
FEWSHOT_DIFFICULTY = [2]
N_GENERATION = 32
N_MULTIPLE_CHOICE = 48
N_FEWSHOT_POOL = 16
N_CHAT = 128


def gsm_doc(record: dict) -> dict:
    """A problem in GSM8k's schema."""
    return {"question": record["prompt"], "answer": record["response"]}


def mc2_doc(record: dict, rng: random.Random) -> dict:
    """A problem in TruthfulQA's mc2 schema: the true solution, and the same solution with one
    arithmetic slip carried to a wrong final answer. The two differ only from the slip on, so
    the score isolates whether the model prefers the right arithmetic."""
    solution = record["response"]
    wrong = plausible_mistake(solution, rng)
    return {
        "question": record["prompt"],
        "mc2_targets": {"choices": [solution, wrong], "labels": [1, 0]},
    }


def build() -> dict[str, list[dict]]:
    """Every embedded file's rows, by file name."""
    _, test = generate_arith(0, 2 * N_CHAT, SEED, DIFFICULTY)
    train, _ = generate_arith(N_FEWSHOT_POOL, 0, SEED, FEWSHOT_DIFFICULTY)
    rng = random.Random(SEED)
    chat_rng = random.Random(SEED + 1)
    # Growing the draw keeps its first problems, so the small sets stay what they were.
    mc2_end = N_GENERATION + N_MULTIPLE_CHOICE
    return {
        "arith_test.jsonl": [gsm_doc(r) for r in test[:N_GENERATION]],
        "arith_train.jsonl": [gsm_doc(r) for r in train],
        "arith_mc2.jsonl": [mc2_doc(r, rng) for r in test[N_GENERATION:mc2_end]],
        "arith_chat_test.jsonl": [gsm_doc(r) for r in test[:N_CHAT]],
        "arith_chat_mc2.jsonl": [mc2_doc(r, chat_rng) for r in test[N_CHAT:]],
    }


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write(directory: Path = DATA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in build().items():
        (directory / name).write_text(to_jsonl(rows))


if __name__ == "__main__":
    write()
