"""Self-play generation on the tiny model: order, padding, shard resume, seeding."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from dataclasses import replace
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from conftest import compose_config

from spin.config import GenerationConfig
from spin.errors import ConfigError
from spin.generation import HFGenerator, count_generated, make_generator
from spin.job import start_job
from spin.pairs import read_pairs
from spin.stages.context import Context
from spin.stages.generation import generate
from spin.stages.start import start_model
from spin.tracking import Tracker
from spin.validation import validate

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
    with pytest.raises(ValueError, match=r"generation\.backend='tgi'.*'hf', 'vllm'"):
        make_generator(model, tokenizer, config(backend="tgi"))


# ------------------------------------------------------------------ vLLM backend
class FakeSamplingParams:
    """Records the settings vLLM's SamplingParams would get."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLLM:
    """Stands in for vllm.LLM: records what it is given and answers each token-id prompt
    as vLLM would, greedily, with the tiny model: the new tokens up to and including eos."""

    instances: ClassVar[list] = []
    model = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            ids = torch.tensor([prompt["prompt_token_ids"]])
            with torch.inference_mode():
                out = FakeLLM.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=params.kwargs["max_tokens"],
                    do_sample=False,
                )
            new = out[0, ids.shape[1] :].tolist()
            stop = params.kwargs["stop_token_ids"][0]
            new = new[: new.index(stop) + 1] if stop in new else new
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=new)]))
        return outputs


@pytest.fixture
def fake_vllm(tiny, monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(FakeLLM, "instances", [])
    monkeypatch.setattr(FakeLLM, "model", tiny[0])
    return module


class RecordingModel(CountingModel):
    """Records the token ids of every prompt the HF backend feeds (left pads removed)."""

    def __init__(self, model):
        super().__init__(model)
        self.fed = []

    def generate(self, input_ids, attention_mask, **kwargs):
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            self.fed.append(ids[mask.bool()].tolist())
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def test_vllm_backend_missing_names_the_package_and_extra(tiny, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match=r"needs the vllm package.*pip install -e '\.\[vllm\]'"):
        make_generator(model, tokenizer, config(backend="vllm"))
    cfg = compose_config("experiment=tiny", "generation.backend=vllm")
    with pytest.raises(ConfigError, match=r"generation\.backend='vllm'.*\[vllm\]"):
        start_job(cfg, tmp_path / "job", "j", "iter0", trains=True)
    assert not (tmp_path / "job").exists()  # stopped before any work
    validate(compose_config("experiment=tiny", "generation.backend=vllm", "dry_run=true"))


def test_vllm_gets_the_hf_backends_prompt_ids_and_greedy_settings(
    tiny, prompts, fake_vllm, tmp_path
):
    model, tokenizer = tiny
    recording = RecordingModel(model)
    hf = HFGenerator(recording, tokenizer, config())
    hf_out = hf.generate(prompts, shard_dir=tmp_path / "hf")
    generator = make_generator(model, tokenizer, config(backend="vllm"))
    vllm_out = generator.generate(prompts, shard_dir=tmp_path / "vllm")
    assert vllm_out == hf_out
    (engine,) = FakeLLM.instances
    fed = [p["prompt_token_ids"] for prompts_, _ in engine.calls for p in prompts_]
    assert sorted(fed) == sorted(recording.fed)
    assert fed == [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    hf_kwargs = hf._decoding_kwargs()
    for _, params in engine.calls:
        for p in params:
            assert p.kwargs == {
                "temperature": 0.0,  # greedy, as do_sample=False
                "top_p": 1.0,
                "max_tokens": 10,  # generation.max_new_tokens
                "n": 1,
                "stop_token_ids": [hf_kwargs["eos_token_id"]],
            }
    assert engine.kwargs["model"] == model.name_or_path
    assert engine.kwargs["dtype"] == "float32"  # the loaded model's
    # the same shard files, so either backend resumes the other's run
    for name in ("shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"):
        assert (tmp_path / "vllm" / name).read_text() == (tmp_path / "hf" / name).read_text()
    assert generator.last_stats["generated_tokens"] == hf.last_stats["generated_tokens"]


def test_vllm_sampling_settings_and_per_prompt_seeds(tiny, prompts, fake_vllm):
    model, tokenizer = tiny
    sampling = config(backend="vllm", do_sample=True, temperature=0.7, top_p=0.9, seed=3)
    generator = make_generator("some/model/dir", tokenizer, sampling, dtype="bfloat16")
    hf_kwargs = HFGenerator(model, tokenizer, replace(sampling, backend="hf"))._decoding_kwargs()
    params = generator.sampling_params(shard_index=1, count=2)
    for i, p in enumerate(params):
        assert p.kwargs["temperature"] == hf_kwargs["temperature"] == 0.7
        assert p.kwargs["top_p"] == hf_kwargs["top_p"] == 0.9
        assert p.kwargs["max_tokens"] == 10
        # generation.seed + the shard's index (as the HF backend seeds a shard), its place
        assert p.kwargs["seed"] == (3 + 1) * 2**32 + i
    generator.generate(prompts)
    (engine,) = FakeLLM.instances
    assert engine.kwargs["model"] == "some/model/dir"
    assert engine.kwargs["dtype"] == "bfloat16"
    seeds = [p.kwargs["seed"] for _, params in engine.calls for p in params]
    # shard_size 2: shards 0, 1, 2 of 2, 2 and 1 prompts
    assert seeds == [3 * 2**32, 3 * 2**32 + 1, 4 * 2**32, 4 * 2**32 + 1, 5 * 2**32]


def test_vllm_resumes_shards_and_starts_no_engine_when_all_are_done(
    tiny, prompts, fake_vllm, tmp_path
):
    model, tokenizer = tiny
    HFGenerator(model, tokenizer, config()).generate(prompts, shard_dir=tmp_path)
    (tmp_path / "shard-00001.jsonl").unlink()
    generator = make_generator(model, tokenizer, config(backend="vllm"))
    generator.generate(prompts, shard_dir=tmp_path)
    (engine,) = FakeLLM.instances
    assert [[p["prompt_token_ids"] for p in call[0]] for call in engine.calls] == [
        [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[2:4]]
    ]
    assert generator.last_stats["reused_shards"] == 2
    generator.generate(prompts, shard_dir=tmp_path)
    assert len(FakeLLM.instances) == 1  # every shard reused: no engine started


def test_pipeline_gives_vllm_the_model_directory_and_loads_no_copy(fake_vllm, tmp_path):
    cfg = compose_config(
        "experiment=tiny", f"paths.root={tmp_path}", "eval=none", "generation.backend=vllm"
    )
    validate(cfg)
    tracker = Tracker(tmp_path / "job", cfg.logger, name="j", group="g", job_type="t", config={})
    ctx = Context(cfg, tracker)
    start, _ = start_model(ctx)

    def refuse(ref):
        pytest.fail(f"the HF model {ref.location} was loaded beside vLLM's copy")

    ctx.models.load = refuse
    pairs = read_pairs(generate(ctx, start, 0))
    (engine,) = FakeLLM.instances
    assert engine.kwargs["model"] == start.location
    assert engine.kwargs["dtype"] == cfg.model.dtype
    assert len(pairs) == cfg.data.n_train
    assert all(isinstance(p["generated"], str) for p in pairs)
