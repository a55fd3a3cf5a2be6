"""The held-out real-response NLL (evaluation/heldout.py): lm-eval's number equals the one
computed by hand, greedy matching means what it says, and every tiny job logs it beside, not
inside, the average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from evaluation import prepare, run_tasks
from evaluation.heldout import heldout_doc, heldout_plan
from spin.data import PromptFormatter
from spin.tracking import read_metrics

PAIRS = [
    ("What is 2 + 3?", "2 + 3 = 5\n#### 5"),
    ("What is 6 * 2?", "6 * 2 = 12\n#### 12"),
    ("Tom has 4 apples.", "4 apples"),
]


def eval_cfg():
    return OmegaConf.merge(compose_config("experiment=tiny").eval, {"limit": None})


def doc(fmt: PromptFormatter, prompt: str, response_ids: list[int] | None = None) -> dict:
    """A document as the chain writes it; ``response_ids`` replaces the real response."""
    encoded = fmt.encode(prompt, PAIRS[0][1], 512, 1024)
    ids = encoded["input_ids"]
    cut = encoded["response_mask"].index(1)
    continuation = ids[cut:] if response_ids is None else response_ids
    return heldout_doc(fmt.prompt_text(prompt), "", ids[:cut], continuation)


def scored(tiny, docs: list[dict], tmp_path: Path) -> dict:
    model, tokenizer = tiny
    plan = heldout_plan("arith", docs, tmp_path / "docs")
    prepared = prepare([plan], tmp_path / "work")
    return run_tasks(prepared, model, tokenizer, eval_cfg())["summary"]["heldout"]


def by_hand(model, context_ids: list[int], continuation_ids: list[int]) -> float:
    """Summed log-probs of the response tokens over a plain forward pass, per token."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = model(ids).logits.log_softmax(-1)[0, :-1]
    targets = ids[0, 1:]
    per_token = logprobs.gather(-1, targets[:, None])[:, 0][len(context_ids) - 1 :]
    return -per_token.sum().item() / len(continuation_ids)


def test_nll_per_token_equals_a_forward_pass_by_hand(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    fmt = PromptFormatter(tokenizer)
    docs = []
    for prompt, response in PAIRS:
        encoded = fmt.encode(prompt, response, 512, 1024)
        ids, cut = encoded["input_ids"], encoded["response_mask"].index(1)
        docs.append(heldout_doc(fmt.prompt_text(prompt), response, ids[:cut], ids[cut:]))
    result = scored(tiny, docs, tmp_path)
    expected = [by_hand(model, d["context_ids"], d["continuation_ids"]) for d in docs]
    assert result["arith_nll"]["items"] == pytest.approx(expected, rel=1e-4)
    assert result["arith_nll"]["value"] == pytest.approx(sum(expected) / 3, rel=1e-4)


def test_greedy_match_is_one_for_the_greedy_output_and_zero_otherwise(tiny, tmp_path) -> None:
    model, tokenizer = tiny
    fmt = PromptFormatter(tokenizer)
    context = doc(fmt, PAIRS[0][0])["context_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([context]), max_new_tokens=6, do_sample=False)
    greedy = out[0, len(context) :].tolist()
    other = [(t + 1) % len(tokenizer) for t in greedy]
    result = scored(tiny, [doc(fmt, PAIRS[0][0], greedy)], tmp_path / "greedy")
    assert result["arith_greedy_match"]["value"] == 1.0
    result = scored(tiny, [doc(fmt, PAIRS[0][0], other)], tmp_path / "other")
    assert result["arith_greedy_match"]["value"] == 0.0


def test_a_tiny_job_logs_the_nll_outside_the_average(tiny_chain: Path) -> None:
    (metrics,) = tiny_chain.rglob("metrics.jsonl")
    logged = [r for r in read_metrics(metrics.parent) if "eval/arith_nll" in r]
    assert [r["iteration"] for r in logged] == [0]
    for row in logged:
        assert row["eval/arith_nll"] > 0
        assert 0 <= row["eval/arith_greedy_match"] <= 1
        tasks = [v for k, v in row.items() if k.count("/") == 2]
        assert row["eval/average"] == pytest.approx(sum(tasks) / len(tasks))
