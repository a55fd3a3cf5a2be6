"""The dry run's memory plan: per-device peaks against hand-computed values, and the setup
it recommends when training does not fit."""

from __future__ import annotations

import json

import pytest
import transformers
from conftest import compose_config

import spin.models
from spin.config import LoraConfig
from spin.planning import HARDWARE, build_plan, format_plan
from spin.planning.hardware import GiB
from spin.planning.memory import KNOWN, NF4_BYTES, estimated

MISTRAL = KNOWN["zephyr-7b-sft-full"]
# Mistral-7B: q, o 4096 x 4096; k, v 4096 x 1024; gate, up, down 4096 x 14336 per layer.
MISTRAL_LAYER_LINEAR = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336
# LoRA r=16 on those seven projections, 32 layers: 16 x (sum of input + output widths).
MISTRAL_LORA_R16 = 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)
TOKENS = 8 * (1024 + 256)  # paper: 8 pairs per device, each <= 1024 + 256 tokens


def _refuse(*args, **kwargs):
    raise AssertionError("the memory plan must not load a model")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(spin.models, "load_model", _refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _refuse)


def memory(*overrides: str):
    return build_plan(compose_config("experiment=paper_zephyr", *overrides)).memory


def stage(plan, name):
    return next(e for e in plan.stages if e.stage == name)


def test_known_shapes_count_their_models_parameters():
    assert MISTRAL.params == pytest.approx(7.24e9, rel=1e-3)
    assert MISTRAL.layer_params == MISTRAL_LAYER_LINEAR + 2 * 4096
    assert KNOWN["smollm2-135m"].params == pytest.approx(1.35e8, rel=1e-2)
    assert MISTRAL.adapter_params(16, list(LoraConfig().target_modules)) == (MISTRAL_LORA_R16)
    assert MISTRAL_LORA_R16 == 41_943_040


def test_7b_bf16_weights_are_14_gb_and_the_kv_cache_by_hand():
    plan = memory("model.n_params=7e9")
    generation = stage(plan, "generation")
    assert generation.parts["weights"] == 14e9
    # 32 sequences x (512 + 256) tokens x 2 (key, value) x 32 layers x 1024 x 2 bytes
    assert generation.parts["kv_cache"] == 32 * 768 * 2 * 32 * 1024 * 2


def test_paper_zephyr_trains_under_zero3_over_8_a100s_by_hand():
    plan = memory("trainer.distributed=zero3")
    train = stage(plan, "train")
    n = 7.24e9
    assert train.parts["weights"] == pytest.approx(2 * n / 8)
    assert train.parts["gradients"] == pytest.approx(2 * n / 8)
    # float32 master copy + one float32 RMSprop state, sharded
    assert train.parts["optimizer"] == pytest.approx((4 + 4) * n / 8)
    # checkpointing: every layer's input, plus one layer recomputed (7h + 2kv + 4i values)
    per_layer = 7 * 4096 + 2 * 1024 + 4 * 14336
    assert train.parts["activations"] == TOKENS * (32 * 4096 + per_layer) * 2
    assert train.parts["logits"] == TOKENS * 32000 * (2 + 4 + 4)
    assert train.parts["gathered"] == 2 * MISTRAL.layer_params * 2
    assert train.fits and train.peak < 20 * GiB
    assert plan.recommendation == "training fits as configured."
    assert [o.setup.distributed for o in plan.options] == ["zero3"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_7b_full_fine_tune_on_one_80gb_gpu_does_not_fit_and_the_plan_says_lora(dtype):
    # float32 master weights, gradients and RMSprop state whatever model.dtype, plus
    # autocast's bf16 copy of every linear layer and the output head
    plan = memory("trainer.world_size=1", "trainer.grad_accumulation=8", f"model.dtype={dtype}")
    train = stage(plan, "train")
    n = 7.24e9
    copies = 2 * (32 * MISTRAL_LAYER_LINEAR + 32000 * 4096)
    assert train.parts["weights"] + train.parts["gradients"] + train.parts["optimizer"] == (
        pytest.approx(3 * 4 * n + copies)
    )
    assert not train.fits
    # ZeRO shards nothing over one device, so after checkpointing only adapters are left
    assert [(o.setup.distributed, o.setup.adapters) for o in plan.options] == [
        ("none", None),
        ("none", "lora"),
    ]
    assert plan.options[-1].estimate.fits
    assert "does not fit as configured" in plan.recommendation
    assert plan.recommendation.endswith("lora=lora")
    cfg = compose_config("experiment=paper_zephyr", f"model.dtype={dtype}", "trainer.world_size=1")
    text = format_plan(build_plan(cfg))
    assert "NO" in text and "[lora=lora]" in text


def test_lora_and_qlora_lower_the_training_estimate():
    full = stage(memory("trainer.world_size=1"), "train")
    lora = stage(memory("trainer.world_size=1", "lora=lora"), "train")
    qlora = stage(memory("trainer.world_size=1", "lora=qlora"), "train")
    assert qlora.peak < lora.peak < full.peak
    n = 7.24e9
    # frozen bf16 weights plus float32 adapters; float32 gradients and one state for them
    assert lora.parts["weights"] == pytest.approx(2 * n + 4 * MISTRAL_LORA_R16)
    assert lora.parts["gradients"] == 4 * MISTRAL_LORA_R16
    assert lora.parts["optimizer"] == 4 * MISTRAL_LORA_R16
    linear = 32 * MISTRAL_LAYER_LINEAR
    assert qlora.parts["weights"] == pytest.approx(
        linear * NF4_BYTES + (n - linear) * 2 + 4 * MISTRAL_LORA_R16
    )
    # dropout copies of each adapted projection's input: q, k, v, o, gate, up (4096), down
    extra = TOKENS * (6 * 4096 + 14336) * 2
    assert lora.parts["activations"] == full.parts["activations"] + extra


def test_qlora_reference_pass_reads_the_4bit_copy():
    full = stage(memory("lora=lora"), "reference")
    qlora = stage(memory("lora=qlora"), "reference")
    assert qlora.parts["weights"] < full.parts["weights"] / 3


def test_checkpointing_is_recommended_when_it_is_enough():
    # a 3B model (an estimated shape) on one GPU: float32 masters and AdamW fit beside the
    # activations of one recomputed layer, not beside every layer's
    plan = memory(
        "model.name=other",
        "model.n_params=3e9",
        "trainer.world_size=1",
        "trainer.optimizer=adamw",
        "trainer.gradient_checkpointing=false",
    )
    first, second = plan.options
    assert not first.estimate.fits and second.estimate.fits
    assert second.overrides == "trainer.gradient_checkpointing=true"
    assert plan.recommendation.endswith("trainer.gradient_checkpointing=true")
    # without checkpointing every layer keeps all its activations, in bf16
    arch = plan.architecture
    per_layer = 7 * arch.hidden + 2 * arch.kv_width + 4 * arch.intermediate
    assert first.estimate.parts["activations"] == TOKENS * arch.layers * per_layer * 2
    # the note says why training holds float32 weights of a bf16 model
    assert any("float32 master weights" in note for note in plan.notes)


def test_sharding_is_recommended_over_several_devices():
    plan = memory("model.dtype=float32", "trainer.optimizer=adamw", "trainer.distributed=ddp")
    assert [o.overrides for o in plan.options] == ["", "trainer.distributed=zero3"]
    zero3 = plan.options[-1].estimate
    n = 7.24e9
    # DeepSpeed computes in bf16 whatever the loaded dtype: bf16 weights and gradients, a
    # float32 master copy and two float32 AdamW states, over 8 devices
    assert zero3.parts["weights"] == zero3.parts["gradients"] == pytest.approx(2 * n / 8)
    assert zero3.parts["optimizer"] == pytest.approx((4 + 2 * 4) * n / 8)
    assert zero3.fits
    assert not any("master weights" in note for note in plan.notes)


def test_nothing_fits_names_the_devices_zero3_needs():
    # 70B (an estimated shape), 16 pairs per device on 2 devices: even QLoRA's activations
    # and 4-bit weights overflow; ZeRO-3 needs 32 devices (its memory halves per doubling)
    plan = memory(
        "model.n_params=7e10", "model.name=big", "trainer.world_size=2", "trainer.batch_size=16"
    )
    assert [o.setup.adapters for o in plan.options] == [None, None, None, "lora", "qlora"]
    assert not any(o.estimate.fits for o in plan.options)
    assert "trainer.batch_size" in plan.recommendation
    assert plan.recommendation.endswith("fits from 32 devices.")


def test_shape_is_read_from_a_local_checkpoint(tmp_path):
    config = {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 688,
        "vocab_size": 1000,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    plan = memory("model.name=local", f"model.path={tmp_path}", "model.n_params=null")
    arch = plan.architecture
    assert (arch.layers, arch.hidden, arch.kv_width, arch.vocab) == (4, 256, 64, 1000)
    assert plan.n_params == arch.params  # no model.n_params: counted from the shape


def test_unknown_model_estimates_a_shape_or_says_unknown():
    shape = estimated(7.24e9)
    assert shape.params == pytest.approx(7.24e9, rel=0.1)
    assert "estimated" in memory("model.name=other").architecture.source
    unknown = build_plan(
        compose_config("experiment=paper_zephyr", "model.name=other", "model.n_params=null")
    )
    assert unknown.memory is None
    assert "Memory: unknown" in format_plan(unknown)


def test_dry_run_text_shows_each_stage_and_the_devices():
    text = format_plan(build_plan(compose_config("experiment=paper_zephyr")))
    assert "Memory per device" in text and "8 x a100 with 80 GiB, 72.0 usable" in text
    for name in ("generation", "reference", "train"):
        assert any(line.lstrip().startswith(name) for line in text.splitlines())


def test_every_hardware_profile_has_a_memory_size():
    assert HARDWARE["a100"].memory == HARDWARE["h100"].memory == 80 * GiB
    assert all(hw.memory > 0 for hw in HARDWARE.values())


def test_lora_training_flops_leave_out_frozen_weight_gradients():
    full = build_plan(compose_config("experiment=paper_zephyr"))
    lora = build_plan(compose_config("experiment=paper_zephyr", "lora=lora"))
    train = [next(s for s in p.stages if s.name == "train") for p in (full, lora)]
    assert train[1].flops == pytest.approx(train[0].flops * 4 / 6)
