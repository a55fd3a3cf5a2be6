"""The dry-run plan: stages, sizes, steps and compute of a config, built offline."""

from __future__ import annotations

import json
import math

import datasets
import huggingface_hub
import pytest
import transformers
from conftest import compose_config

import spin.models
from spin.data import load_splits
from spin.models import build_tiny
from spin.planning import HARDWARE, build_plan, format_plan, hardware_profile

N_ZEPHYR = 7.24e9
A100 = HARDWARE["a100"]


def _refuse(*args, **kwargs):
    raise AssertionError("the plan must not load a model or download data")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every test here fails if the plan loads a model, a tokenizer or hub data."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(spin.models, "load_model", _refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", _refuse)
    monkeypatch.setattr(datasets, "load_dataset", _refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _refuse)


@pytest.fixture(scope="module")
def paper_cfg():
    return compose_config("experiment=paper_zephyr", "iter=3")


def by_name(stages, name):
    return next(s for s in stages if s.name == name)


def test_paper_plan_has_each_iterations_stages_in_order(paper_cfg):
    plan = build_plan(paper_cfg)
    assert [s.name for s in plan.stages_of(None)] == ["eval"]  # the start model
    assert plan.iterations() == [0, 1, 2, 3]
    for t in range(4):
        stages = plan.stages_of(t)
        assert [s.name for s in stages] == ["generation", "reference", "train", "eval"]
        assert by_name(stages, "train").model == f"M_{t} -> M_{t + 1}"


def test_paper_pairs_double_from_iteration_1_and_steps_follow_global_batch_64(paper_cfg):
    plan = build_plan(paper_cfg)
    assert plan.n_train.value == 50_000
    assert plan.global_batch == 64
    for t, pairs in enumerate([50_000, 100_000, 100_000, 100_000]):
        stages = plan.stages_of(t)
        assert by_name(stages, "generation").items == 50_000
        assert by_name(stages, "reference").items == pairs
        train = by_name(stages, "train")
        assert train.items == pairs
        assert train.epochs == 2
        assert train.steps == math.ceil(pairs / 64) * 2
    assert by_name(plan.stages_of(0), "train").steps == 1564


def test_paper_training_flops_and_time_by_hand(paper_cfg):
    plan = build_plan(paper_cfg, A100)
    train = by_name(plan.stages_of(0), "train")
    # a packed pair: max_length 1024 + 256 generated tokens; 50k pairs, 2 epochs
    tokens = 50_000 * (1024 + 256)
    assert train.tokens == tokens
    assert train.flops == pytest.approx(6 * N_ZEPHYR * tokens * 2)
    assert train.seconds == pytest.approx(train.flops / (8 * 312e12 * 0.4))
    reference = by_name(plan.stages_of(1), "reference")
    assert reference.flops == pytest.approx(2 * N_ZEPHYR * 100_000 * (1024 + 256))
    generation = by_name(plan.stages_of(0), "generation")
    assert generation.flops == pytest.approx(2 * N_ZEPHYR * 50_000 * (512 + 256))


def test_small_generation_batches_are_bounded_by_reading_the_weights():
    cfg = compose_config("experiment=paper_zephyr", "generation.batch_size=1")
    generation = by_name(build_plan(cfg, A100).stages_of(0), "generation")
    # 50k prompts over 8 devices one at a time, 256 steps each, bf16 weights per step
    steps = 50_000 // 8 * 256
    assert generation.seconds == pytest.approx(steps * N_ZEPHYR * 2 / 2.0e12)
    assert generation.seconds > generation.flops / (8 * A100.sustained_flops)


def test_paper_costs_are_printed_beside(paper_cfg):
    plan = build_plan(paper_cfg)
    assert by_name(plan.stages_of(0), "generation").paper_seconds == pytest.approx(1.45 * 3600)
    assert by_name(plan.stages_of(0), "train").paper_seconds == pytest.approx(4.32 * 3600)
    assert by_name(plan.stages_of(3), "train").paper_seconds == pytest.approx(8.64 * 3600)
    text = format_plan(plan)
    for expected in ("4.32 h", "8.64 h", "87.0 min", "paper_zephyr", "1,564", "3,126"):
        assert expected in text
    for t in range(4):
        assert f"iteration {t}" in text
    assert "total" in text


def test_tiny_arith_plan_counts_the_data_and_the_model():
    cfg = compose_config("experiment=tiny", "iter=1")
    plan = build_plan(cfg)
    n = len(load_splits(cfg.data).train)
    assert plan.n_train.value == n
    assert plan.n_train.source == "counted"
    assert by_name(plan.stages_of(1), "train").items == 2 * n
    model, _ = build_tiny(cfg.model.seed)
    assert plan.n_params.value == sum(p.numel() for p in model.parameters())
    # eval.limit=4 documents of each of the two embedded tasks
    assert by_name(plan.stages_of(0), "eval").items == 8


def test_local_file_is_counted_after_deduplication_and_holdout(tmp_path):
    path = tmp_path / "data.jsonl"
    prompts = ["a", "b", "a", "c", "d", "e", "f", "g"]
    path.write_text("".join(json.dumps({"prompt": p, "response": "r"}) + "\n" for p in prompts))
    cfg = compose_config("model=tiny", "data=jsonl", f"data.path={path}", "data.n_test=2")
    plan = build_plan(cfg)
    # 8 lines, one duplicate, 2 held out
    assert plan.n_train.value == 5
    assert by_name(plan.stages_of(0), "generation").items == 5


def test_hub_data_without_n_train_is_unknown_not_fetched():
    cfg = compose_config("experiment=paper_zephyr", "data.n_train=null")
    plan = build_plan(cfg)
    assert plan.n_train.value is None
    train = by_name(plan.stages_of(0), "train")
    assert train.items is None and train.flops is None and train.seconds is None
    text = format_plan(plan)
    assert "unknown" in text


def test_unknown_parameter_count_keeps_sizes_and_steps():
    cfg = compose_config("experiment=paper_zephyr", "model.n_params=null")
    train = by_name(build_plan(cfg).stages_of(0), "train")
    assert train.steps == 1564
    assert train.flops is None


def test_opponents_change_pairs_and_reference_passes():
    fictitious = build_plan(compose_config("experiment=tiny", "iter=2", "opponent=fictitious"))
    n = fictitious.n_train.value
    assert [by_name(fictitious.stages_of(t), "train").items for t in range(3)] == [n, n, n]
    mixture = build_plan(compose_config("experiment=tiny", "iter=2", "opponent=kl_mixture"))
    assert "reference_start" not in [s.name for s in mixture.stages_of(0)]
    for t in (1, 2):
        start_ref = by_name(mixture.stages_of(t), "reference_start")
        assert start_ref.model == "M_0"
        assert start_ref.items == 2 * n


def test_baselines_and_sft_stage():
    dpo = build_plan(compose_config("experiment=tiny", "baseline=dpo"))
    assert [s.name for s in dpo.stages] == ["eval", "dpo_reference", "dpo_train", "eval"]
    assert by_name(dpo.stages, "dpo_train").items == dpo.n_train.value  # one pair per prompt
    sft_more = build_plan(compose_config("experiment=tiny", "baseline=sft_more"))
    assert [s.name for s in sft_more.stages] == ["eval", "sft_more", "eval"]
    only_sft = build_plan(compose_config("experiment=tiny", "baseline=sft"))
    assert [s.name for s in only_sft.stages] == ["eval"]
    chained = build_plan(
        compose_config("experiment=tiny", "iter=1", "baseline=spin_dpo", "sft.enabled=true")
    )
    names = [s.name for s in chained.stages]
    assert names[:2] == ["sft", "eval"]
    assert names[-3:] == ["dpo_reference", "dpo_train", "eval"]
    assert by_name(chained.stages, "dpo_train").model == "M_2 -> M_2+DPO"


def test_leaderboard_eval_estimate_honours_limit():
    full = build_plan(compose_config("experiment=paper_zephyr", "eval=leaderboard"))
    assert by_name(full.stages, "eval").items == 1172 + 817 + 1267 + 1319 + 10042 + 14042
    limited = build_plan(
        compose_config("experiment=paper_zephyr", "eval=leaderboard", "eval.limit=10")
    )
    # five single tasks of 10 documents and MMLU's 57 subjects of 10
    assert by_name(limited.stages, "eval").items == 5 * 10 + 57 * 10
    assert "estimates" in format_plan(limited)


def test_no_eval_tasks_no_eval_stage():
    plan = build_plan(compose_config("experiment=tiny", "eval=none"))
    assert "eval" not in [s.name for s in plan.stages]


def test_hardware_profile_scales_time(paper_cfg):
    slow = build_plan(paper_cfg, hardware_profile("a100", 0.2))
    fast = build_plan(paper_cfg, hardware_profile("a100", 0.4))
    train_slow = by_name(slow.stages_of(0), "train").seconds
    assert train_slow == pytest.approx(2 * by_name(fast.stages_of(0), "train").seconds)
    with pytest.raises(ValueError, match="expected one of"):
        hardware_profile("tpu")
    with pytest.raises(ValueError, match="utilisation"):
        hardware_profile("a100", 1.5)
