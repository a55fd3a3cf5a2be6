"""Loglikelihood requests scored only at their continuation's positions give lm-eval's HFLM
answers: the same log-probabilities and greedy flags, the one-token cache and left cuts
included, whatever part of a batch a row is scored in."""

from __future__ import annotations

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from evaluation import continuations
from evaluation.model import LoadedModel

MAX_LENGTH = 48


@pytest.fixture(scope="module")
def lm(tiny) -> LoadedModel:
    model, tokenizer = tiny
    return LoadedModel(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=MAX_LENGTH)


def greedy(lm: LoadedModel, context: list[int], n: int) -> list[int]:
    """The ``n`` tokens greedy decoding continues ``context`` with."""
    with torch.inference_mode():
        out = lm.model.generate(
            torch.tensor([context]), max_new_tokens=n, min_new_tokens=n, do_sample=False
        )
    return out[0, len(context) :].tolist()


def requests(lm: LoadedModel) -> list:
    """Requests of every shape a task sends: multiple choice with one-token answers sharing
    a context (the one-token cache), multi-token answers, greedy continuations, a context
    longer than the window, and held-out rows (no cache key)."""
    encode = lm.tokenizer.encode
    out = []
    for question in ("2 + 3 =", "What is seven times six? Answer:", "Q"):
        context = encode(question)
        for choice in (" A", " B", " C", " D"):
            out.append(((question, choice), context, encode(choice)))
        for choice in (" forty-two", " 5", " none of these"):
            out.append(((question, choice), context, encode(choice)))
        out.append(((question, "greedy"), context, greedy(lm, context, 5)))
    long_context = encode("a long story, " * 10)
    assert len(long_context) > MAX_LENGTH
    out.append(((None, None), long_context, encode(" the end")))
    out.append(((None, None), encode("x"), encode("y" * 30)))
    return out


def test_scores_and_greedy_flags_are_hflms(lm) -> None:
    asked = requests(lm)
    expected = HFLM._loglikelihood_tokens(lm, asked, disable_tqdm=True)
    got = lm._loglikelihood_tokens(asked, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in expected]
    assert any(g for _, g in got)  # the greedy continuations are recognised as such
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-4, rel=1e-5)


def test_a_batch_split_to_fit_the_logits_budget_scores_the_same(lm, monkeypatch) -> None:
    asked = requests(lm)
    whole = lm._loglikelihood_tokens(asked, disable_tqdm=True)
    # One row's logits for a 30-token continuation exceed this: every row is its own part.
    monkeypatch.setattr(continuations, "LOGITS_BUDGET_BYTES", 1024)
    split = lm._loglikelihood_tokens(asked, disable_tqdm=True)
    assert [g for _, g in split] == [g for _, g in whole]
    assert [lp for lp, _ in split] == pytest.approx([lp for lp, _ in whole], abs=1e-5, rel=1e-6)


def test_a_request_without_a_continuation_is_refused() -> None:
    with pytest.raises(ValueError, match="continuation token"):
        continuations.window([1, 2], [], MAX_LENGTH)


# ------------------------------------------------------------------------- greedy generation
class Request:
    """The part of an lm-eval generation request HFLM's ``generate_until`` reads."""

    def __init__(self, context: str, settings: dict) -> None:
        self.args = (context, settings)


def generation_requests() -> list[Request]:
    """Contexts of different lengths under two stop settings and budgets, so batches hold
    rows that stop at a stop sequence, at the budget, and at different steps."""
    contexts = ["Question: 2 + 3 =", "Tell a story.", "a", "Answer: " * 6, "xyz" * 9, "Q: ?"]
    settings = [
        {"until": ["\n\n", "e"], "do_sample": False, "max_gen_toks": 12},
        {"until": ["Question:"], "do_sample": False, "max_gen_toks": 20},
    ]
    return [Request(c, s) for s in settings for c in contexts]


@pytest.mark.parametrize("eos_stop", [True, False])
def test_greedy_generations_are_hflms(tiny, eos_stop: bool) -> None:
    model, tokenizer = tiny
    lm = LoadedModel(pretrained=model, tokenizer=tokenizer, batch_size=4, eos_stop=eos_stop)
    asked = generation_requests()
    expected = HFLM.generate_until(lm, asked, disable_tqdm=True)
    got = lm.generate_until(asked, disable_tqdm=True)
    assert got == expected
    assert len(set(got)) > 3 and any(len(text) >= 12 for text in got)


def test_sampling_and_greedy_altering_configs_are_left_to_generate(tiny, monkeypatch) -> None:
    model, tokenizer = tiny
    lm = LoadedModel(pretrained=model, tokenizer=tokenizer, batch_size=4)
    called = []
    monkeypatch.setattr(HFLM, "generate_until", lambda self, reqs, _=False: called.append(1) or [])
    lm.generate_until([Request("a", {"do_sample": True, "temperature": 0.7})], True)
    assert called == [1]
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.3)
    lm.generate_until(generation_requests(), True)
    assert called == [1, 1]
