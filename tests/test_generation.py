"""Self-play generation on the tiny model: order, padding, shard resume, seeding."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from spin.config import GenerationConfig
from spin.generation import HFGenerator, count_generated, make_generator

CONTENTS = ["7", "what is 12 + 30?", "hi", "a much longer question about apples and pears", "x y"]


@pytest.fixture(scope="module")
def prompts(tiny):
    _, tokenizer = tiny
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True
        )
        for c in CONTENTS
    ]


def config(**overrides) -> GenerationConfig:
    return replace(GenerationConfig(max_new_tokens=10, batch_size=3, shard_size=2), **overrides)


class CountingModel:
    """Delegates to the model and counts ``generate`` calls, to see which work was redone."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def generate(self, *args, **kwargs):
        self.calls += 1
        return self.model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def unbatched_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_batched_greedy_equals_one_prompt_at_a_time(tiny, prompts):
    model, tokenizer = tiny
    batched = HFGenerator(model, tokenizer, config(batch_size=5, shard_size=5)).generate(prompts)
    single = [unbatched_greedy(model, tokenizer, p, 10) for p in prompts]
    assert batched == single
    # The prompts must lead to different answers, or the comparison could not catch a mix-up.
    assert len(set(single)) > 1


def test_batch_size_and_length_sorting_do_not_change_outputs(tiny, prompts):
    model, tokenizer = tiny
    one_by_one = HFGenerator(model, tokenizer, config(batch_size=1)).generate(prompts)
    batched = HFGenerator(model, tokenizer, config(batch_size=3)).generate(prompts)
    reversed_out = HFGenerator(model, tokenizer, config(batch_size=3)).generate(prompts[::-1])
    assert len(batched) == len(prompts)
    assert batched == one_by_one
    assert reversed_out == batched[::-1]


def test_tokenizer_padding_side_is_left_unchanged(tiny, prompts):
    model, tokenizer = tiny
    tokenizer.padding_side = "right"
    try:
        out = HFGenerator(model, tokenizer, config(batch_size=5)).generate(prompts)
        assert tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = "left"
    assert out == HFGenerator(model, tokenizer, config(batch_size=1)).generate(prompts)


def test_shards_are_written_and_reused_without_generating(tiny, prompts, tmp_path):
    model, tokenizer = tiny
    counting = CountingModel(model)
    generator = HFGenerator(counting, tokenizer, config())
    first = generator.generate(prompts, shard_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    rows = [json.loads(line) for line in (tmp_path / "shard-00001.jsonl").read_text().splitlines()]
    assert rows == [
        {"index": 2, "prompt": prompts[2], "completion": first[2]},
        {"index": 3, "prompt": prompts[3], "completion": first[3]},
    ]
    calls = counting.calls
    second = generator.generate(prompts, shard_dir=tmp_path)
    assert second == first
    assert counting.calls == calls
    assert generator.last_stats["reused_shards"] == 3
    assert generator.last_stats["generated_tokens"] == 0


def test_interrupted_run_regenerates_only_missing_shard(tiny, prompts, tmp_path):
    model, tokenizer = tiny
    counting = CountingModel(model)
    generator = HFGenerator(counting, tokenizer, config(batch_size=8))
    first = generator.generate(prompts, shard_dir=tmp_path)
    (tmp_path / "shard-00001.jsonl").unlink()
    calls = counting.calls
    resumed = generator.generate(prompts, shard_dir=tmp_path)
    assert resumed == first
    assert counting.calls == calls + 1
    assert generator.last_stats["reused_shards"] == 2
    assert (tmp_path / "shard-00001.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_shard_with_other_prompts_raises_naming_file(tiny, prompts, tmp_path):
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer, config())
    generator.generate(prompts, shard_dir=tmp_path)
    changed = [*prompts[:3], "a different prompt", prompts[4]]
    with pytest.raises(ValueError, match=r"shard-00001\.jsonl"):
        generator.generate(changed, shard_dir=tmp_path)


def test_no_shard_dir_writes_nothing(tiny, prompts, tmp_path, monkeypatch):
    model, tokenizer = tiny
    monkeypatch.chdir(tmp_path)
    HFGenerator(model, tokenizer, config()).generate(prompts)
    assert list(tmp_path.iterdir()) == []


def test_sampling_is_reproducible_and_differs_from_greedy(tiny, prompts, tmp_path):
    model, tokenizer = tiny
    sampling = config(do_sample=True, temperature=1.0, seed=3)
    first = HFGenerator(model, tokenizer, sampling).generate(prompts)
    torch.manual_seed(12345)  # the global RNG state before the call must not matter
    second = HFGenerator(model, tokenizer, sampling).generate(prompts)
    greedy = HFGenerator(model, tokenizer, config()).generate(prompts)
    other_seed = HFGenerator(model, tokenizer, replace(sampling, seed=4)).generate(prompts)
    assert first == second
    assert first != greedy
    assert first != other_seed


def test_sampled_resume_matches_uninterrupted_run(tiny, prompts, tmp_path):
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer, config(do_sample=True, seed=1))
    uninterrupted = generator.generate(prompts)
    generator.generate(prompts, shard_dir=tmp_path)
    (tmp_path / "shard-00002.jsonl").unlink()
    (tmp_path / "shard-00000.jsonl").unlink()
    assert generator.generate(prompts, shard_dir=tmp_path) == uninterrupted


def test_stats_report_throughput(tiny, prompts):
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer, config())
    generator.generate(prompts)
    stats = generator.last_stats
    assert 0 < stats["generated_tokens"] <= len(prompts) * 10
    assert stats["seconds"] > 0
    assert stats["tokens_per_second"] == pytest.approx(stats["generated_tokens"] / stats["seconds"])
    assert stats["reused_shards"] == 0


def test_generated_tokens_stop_at_first_eos():
    eos, pad = 2, 0
    new_tokens = torch.tensor([[5, 6, eos, pad, pad], [5, 6, 7, 8, 9], [eos, pad, pad, pad, pad]])
    assert count_generated(new_tokens, eos) == 3 + 5 + 1
    # A tokenizer whose pad is its eos: the pads after the first eos still do not count.
    assert count_generated(torch.tensor([[5, eos, eos, eos]]), eos) == 2


def test_make_generator_rejects_unknown_backend(tiny):
    model, tokenizer = tiny
    assert isinstance(make_generator(model, tokenizer, config()), HFGenerator)
    with pytest.raises(ValueError, match=r"generation\.backend='vllm'.*'hf'"):
        make_generator(model, tokenizer, config(backend="vllm"))
