"""Bad input and numerical faults: each stops with a message naming the thing and what was
expected, and nothing computed before the fault is lost."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_train
from safetensors.torch import load_file
from tiny_pairs import make_pairs, tiny_training_args
from transformers import Trainer

from spin.chain import run
from spin.config import GenerationConfig
from spin.data import PromptFormatter
from spin.errors import DataError, NonFiniteLossError
from spin.generation import HFGenerator
from spin.logprobs import reference_logps
from spin.models import build_tiny
from spin.sft import encode_sft, train_sft
from spin.stages.context import Context
from spin.tracking import Tracker, read_metrics
from spin.trainer import SPINTrainer, train_pairs
from spin.validation import validate

PAIRS = [
    ("What is 2+3?", "2+3=5. #### 5", "It is 6"),
    ("What is 7*8?", "#### 56", "7*8 is 54, so #### 54"),
    ("Add 10 and 11.", "10+11=21 #### 21", "21"),
    ("Tom has 4 apples and eats 1. How many are left?", "4-1=3. #### 3", "#### 5"),
]


def nan_on_call(monkeypatch, cls: type, call: int) -> None:
    """Make ``cls.compute_loss`` return NaN on its ``call``-th training call."""
    original = cls.compute_loss
    calls = Counter()

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        calls["n"] += model.training
        return loss * float("nan") if model.training and calls["n"] == call else loss

    monkeypatch.setattr(cls, "compute_loss", compute_loss)


# --- numerical faults -----------------------------------------------------------------------


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model, tokenizer = build_tiny(seed=0)
    pairs = make_pairs(tokenizer, PAIRS)
    real, generated = reference_logps(model, pairs, 4, tokenizer.pad_token_id, desc="ref")
    for pair, r, g in zip(pairs, real, generated, strict=True):
        pair["ref_real_logps"], pair["ref_generated_logps"] = r, g
    nan_on_call(monkeypatch, SPINTrainer, call=3)
    args = tiny_training_args(tmp_path, 1, save_steps=1)
    with pytest.raises(NonFiniteLossError) as err:
        train_pairs(model, tokenizer, pairs, args, "sigmoid", 0.1, 0.0, 0.0)
    message = str(err.value)
    assert (
        "training loss is nan (expected a finite number) at step 3, batch 3 of epoch 1" in message
    )
    assert f"{tmp_path / 'checkpoint-2'}, is kept" in message
    # Stopped before the optimizer took the NaN step: no later checkpoint, and the weights in
    # memory are still finite and equal to the last checkpoint's.
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    saved = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.isfinite(tensor).all(), name
        torch.testing.assert_close(tensor, saved[name], msg=name)


def test_nan_in_sft_names_the_epoch_and_batch_under_accumulation(tmp_path, monkeypatch):
    model, tokenizer = build_tiny(seed=0)
    records = [{"prompt": p, "response": r} for p, r, _ in PAIRS]
    dataset = encode_sft(PromptFormatter(tokenizer), records, 256, 512)
    nan_on_call(monkeypatch, Trainer, call=5)
    # 4 examples, 1 per batch, 2 batches per step: the 5th batch is the first of epoch 2.
    args = tiny_training_args(tmp_path, 1, epochs=2, grad_accumulation=2)
    with pytest.raises(NonFiniteLossError, match="at step 3, batch 1 of epoch 2") as err:
        train_sft(model, tokenizer, dataset, args)
    assert "no checkpoint had been saved yet" in str(err.value)


# --- over-long prompts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def formatter():
    return PromptFormatter(build_tiny()[1])


def test_rejected_prompt_names_the_record_its_length_and_the_setting(formatter):
    prompts = ["short", "a long question " * 4, "a longer question " * 8]
    limit = len(formatter.prompt_ids(prompts[0], 10_000))
    length = len(formatter.prompt_ids(prompts[1], 10_000))
    with pytest.raises(DataError) as err:
        formatter.check_lengths(prompts, limit, "reject", "data train")
    assert str(err.value).startswith(
        f"data train record 1 (prompt 'a long question a long question a long q'...): "
        f"{length} tokens once formatted, expected at most model.max_prompt_length={limit} "
        "(model.prompt_overflow=reject)"
    )


def test_truncated_prompts_are_counted_in_one_warning(formatter, caplog):
    prompts = ["short", "a long question " * 4, "a longer question " * 8]
    limit = len(formatter.prompt_ids(prompts[0], 10_000))
    with caplog.at_level(logging.WARNING, logger="spin.data.formatting"):
        assert formatter.check_lengths(prompts, limit, "truncate", "data train") == 2
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"2 of 3 data train prompts are longer than model.max_prompt_length={limit} tokens"
    )
    assert formatter.check_lengths(prompts[:1], limit, "reject", "data train") == 0


def test_generation_feeds_the_prompt_ids_training_scores(formatter):
    model, tokenizer = build_tiny(seed=0)
    prompts = ["hi", "what is 12 + 30?", "x" * 60 + " and the question at the end?"]
    texts = [formatter.prompt_text(p) for p in prompts]
    cfg = replace(GenerationConfig(), max_new_tokens=8, batch_size=3)
    generator = HFGenerator(model, tokenizer, cfg)
    limit = 40
    ids = [formatter.prompt_ids(p, limit) for p in prompts]
    assert len(ids[0]) < len(ids[1]) < len(ids[2]) == limit
    encoded = formatter.encode(prompts[2], "ok", limit, 64)
    assert ids[2] == encoded["input_ids"][:limit]  # the prompt training scores
    cut = generator.generate(texts, prompt_ids=ids)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids[2]]), max_new_tokens=8, do_sample=False)
    assert cut[2] == tokenizer.decode(out[0, limit:], skip_special_tokens=True).strip()
    # Prompts that fit are answered exactly as from their text.
    assert generator.generate(texts[:2], prompt_ids=ids[:2]) == generator.generate(texts[:2])
    with pytest.raises(ValueError, match="prompt_ids holds 2 prompts; expected one per prompt"):
        generator.generate(texts, prompt_ids=ids[:2])


def tiny_context(root: Path, *overrides: str) -> Context:
    cfg = compose_config("experiment=tiny", f"paths.root={root}", "eval=none", *overrides)
    validate(cfg)
    tracker = Tracker(root / "job", cfg.logger, name="job", group="g", job_type="t", config={})
    return Context(cfg, tracker)


def test_reject_stops_before_any_generation(tmp_path):
    ctx = tiny_context(tmp_path, "model.max_prompt_length=30", "model.prompt_overflow=reject")
    with pytest.raises(DataError) as err:
        run(ctx)
    assert re.match(
        r"data train record 0 \(prompt '.*'\.\.\.\): \d+ tokens once formatted, "
        r"expected at most model\.max_prompt_length=30 \(model\.prompt_overflow=reject\)",
        str(err.value),
    )
    assert not (tmp_path / "artifacts" / "generations").exists()


def test_truncation_warns_and_keys_the_generations_by_the_limit(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="spin.data.formatting"):
        run(tiny_context(tmp_path, "model.max_prompt_length=30"))
    assert (
        caplog.records[0]
        .getMessage()
        .startswith("16 of 16 data train prompts are longer than model.max_prompt_length=30 tokens")
    )
    (spec,) = (tmp_path / "artifacts" / "generations").glob("*/spec.json")
    assert json.loads(spec.read_text())["max_prompt_length"] == 30


# --- nothing computed earlier is lost -------------------------------------------------------


def built(job_dir: Path) -> Counter:
    return Counter(
        r["kind"]
        for r in read_metrics(job_dir)
        if r["type"] == "event" and r["event"] == "artifact" and r["built"]
    )


def test_a_fault_in_iteration_one_keeps_iteration_zero_and_a_fixed_rerun_reuses_it(tmp_path):
    common = ("experiment=tiny", f"paths.root={tmp_path}", "eval=none", "iter=1")
    failed = run_train(*common, "+schedule.1.lr=1e30", f"hydra.run.dir={tmp_path}/a", check=False)
    assert failed.returncode == 2  # a message, not a traceback
    assert "Traceback" not in failed.stderr
    assert re.search(
        r"Error: training loss is (nan|inf) \(expected a finite number\) at step "
        r"\d+, batch \d+ of epoch 1; training stopped before the optimizer applied it",
        failed.stderr,
    )
    # iteration 0 (start model, generations, reference, model) and iteration 1's generations
    # and reference were built before the fault
    assert built(tmp_path / "a") == {"model": 2, "generations": 2, "reference": 2}
    assert len(list((tmp_path / "artifacts" / "model").glob("*.partial"))) == 1
    run_train(*common, f"hydra.run.dir={tmp_path}/b")
    assert built(tmp_path / "b") == {"model": 1}
