"""LoRA through peft: the reference is the model with its adapters off, every training stage
merges its adapters into a full model, and the chain runs end to end with adapters."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import artifact_events, compose_config, run_train, train_in_process
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from tiny_pairs import make_pairs, tiny_training_args

from spin.errors import ConfigError
from spin.job import start_job
from spin.logprobs import reference_logps
from spin.lora import add_adapters, merge_adapters
from spin.models import build_tiny, load_model
from spin.trainer import train_pairs
from spin.validation import validate

PAIRS = [
    ("What is 2+3?", "2+3=5. #### 5", "It is 6"),
    ("Tom has 4 apples and eats 1. How many are left?", "4-1=3. #### 3", "#### 5"),
    ("What is 7*8?", "#### 56", "7*8 is 54, so #### 54"),
    ("Add 10 and 11.", "10+11=21 #### 21", "21"),
]
# The tiny model's projections, each adapted by the default lora.target_modules.
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def logps(model, tokenizer, pairs: list[dict]) -> torch.Tensor:
    """Real then generated log-probs of every pair, as the reference pass computes them."""
    real, generated = reference_logps(model, pairs, 4, tokenizer.pad_token_id, desc="logps")
    return torch.tensor(real + generated, dtype=torch.float64)


def adapted_modules(model) -> set[str]:
    """Names (last component) of the modules of ``model`` that carry a LoRA adapter."""
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }


def test_adapters_off_give_the_base_model_and_merging_gives_the_trained_one(tmp_path):
    cfg = compose_config("experiment=tiny", "lora=lora")
    model, tokenizer = build_tiny(seed=0)
    base = copy.deepcopy(model)
    pairs = make_pairs(tokenizer, PAIRS)
    reference = logps(base, tokenizer, pairs)

    policy = add_adapters(model, cfg.lora)
    assert adapted_modules(policy) == PROJECTIONS
    # Fresh adapters add exactly zero: before training the policy is its reference.
    assert torch.equal(logps(policy, tokenizer, pairs), reference)

    train_pairs(
        policy,
        tokenizer,
        [
            {**p, "ref_real_logps": r.item(), "ref_generated_logps": g.item()}
            for p, r, g in zip(pairs, *reference.split(len(pairs)), strict=True)
        ],
        tiny_training_args(tmp_path / "checkpoints", len(PAIRS), epochs=6),
        loss_name="sigmoid",
        beta=0.1,
        label_smoothing=0.0,
        nll_weight=0.0,
    )
    trained = logps(policy, tokenizer, pairs)
    assert (trained - reference).abs().max() > 1e-2
    with policy.disable_adapter():
        assert torch.equal(logps(policy, tokenizer, pairs), reference)

    # Plain LoRA merges in place: the base location is read under QLoRA only.
    merged = merge_adapters(policy, tmp_path / "not-read", tmp_path / "adapter", cfg)
    assert not isinstance(merged, PeftModel) and not adapted_modules(merged)
    torch.testing.assert_close(logps(merged, tokenizer, pairs), trained, atol=1e-4, rtol=0)

    # What the pipeline saves loads as an ordinary model, and the adapter saved beside it
    # puts the trained model back on the base.
    merged.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    reloaded, _ = load_model(tmp_path / "model")
    assert torch.equal(logps(reloaded, tokenizer, pairs), logps(merged, tokenizer, pairs))
    restored = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert torch.equal(logps(restored, tokenizer, pairs), trained)


def test_all_linear_adapts_every_linear_layer_but_the_output_head(tiny):
    cfg = compose_config("experiment=tiny", "lora=lora", "lora.target_modules=[all-linear]")
    policy = add_adapters(copy.deepcopy(tiny[0]), cfg.lora)
    assert adapted_modules(policy) == PROJECTIONS


def test_unknown_target_module_names_the_setting(tiny):
    cfg = compose_config("experiment=tiny", "lora=lora", "lora.target_modules=[c_attn]")
    with pytest.raises(ConfigError, match=r"lora\.target_modules=\['c_attn'\].*LlamaForCausalLM"):
        add_adapters(copy.deepcopy(tiny[0]), cfg.lora)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["lora=lora", "lora.r=0"], r"lora\.r=0: expected a finite number >= 1"),
        (
            ["lora=lora", "lora.dropout=1.0"],
            r"lora\.dropout=1\.0: expected a finite number >= 0 and < 1",
        ),
        (["lora=lora", "lora.quantize=8bit"], r"lora\.quantize='8bit' is not allowed"),
        (["lora=lora", "lora.target_modules=[]"], r"lora\.target_modules is empty"),
        (["lora.quantize=4bit"], r"lora\.quantize='4bit' .* set lora\.enabled=true"),
    ],
)
def test_lora_settings_are_checked_at_start_up(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config("experiment=tiny", *overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA's prerequisites may all be here")
def test_qlora_without_a_gpu_names_what_it_needs_before_any_work_but_plans(tmp_path):
    job_dir = tmp_path / "job"
    with pytest.raises(ConfigError, match=r"lora\.quantize='4bit' \(QLoRA\) needs .*a CUDA GPU"):
        start_job(compose_config("experiment=tiny", "lora=qlora"), job_dir, "j", "iter0", True)
    assert not job_dir.exists()
    validate(compose_config("experiment=tiny", "lora=qlora", "dry_run=true"))


def specs(root: Path, kind: str) -> dict[str, dict]:
    """Key -> spec of every artifact of ``kind`` under outputs root ``root``."""
    folder = root / "artifacts" / kind
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/spec.json")}


@pytest.fixture(scope="module")
def lora_and_full(tmp_path_factory) -> Path:
    """The tiny chain to iteration 1, fully fine-tuned and with LoRA, under one root."""
    root = tmp_path_factory.mktemp("lora")
    train_in_process("-m", "experiment=tiny", f"paths.root={root}", "lora=none,lora", "iter=1")
    return root


def test_lora_chain_trains_from_merged_models_on_the_full_models_iteration_0_reference(
    lora_and_full,
):
    root = lora_and_full
    built = Counter(e["kind"] for e in artifact_events(root) if e["built"])
    # Iteration 0's generations and reference come from the start model, whatever trains on
    # them, so both jobs share them; from iteration 1 on each chain has its own.
    assert built == {"model": 1 + 4, "generations": 1 + 2, "reference": 1 + 2, "eval": 1 + 4}
    models, refs = specs(root, "model"), specs(root, "reference")
    adapted = {key: spec for key, spec in models.items() if "lora" in spec}
    assert len(adapted) == 2
    assert all("quantize" not in spec for spec in refs.values())
    second = next(spec for spec in adapted.values() if spec["parent"] in adapted)
    # Iteration 1 starts from iteration 0's merged model, which is also its reference.
    assert refs[second["reference"]]["model"] == second["parent"]
    for key in adapted:
        folder = root / "artifacts" / "model" / key
        assert (folder / "adapter" / "adapter_config.json").is_file()
        assert (folder / "model" / "model.safetensors").is_file()
        assert not (folder / "model" / "adapter_config.json").exists()


def test_lora_policy_starts_each_iteration_equal_to_its_reference(lora_and_full):
    reports = [json.loads(p.read_text()) for p in lora_and_full.rglob("report.json")]
    report = next(r for r in reports if "lora=lora" in r["overrides"])
    rows = [row for row in report["rows"] if row["kind"] == "spin"]
    assert [row["iteration"] for row in rows] == [0, 1]
    for row in rows:
        first = row["curves"][0]
        assert first["rewards/real"] == pytest.approx(0.0, abs=1e-5)
        assert first["rewards/generated"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.slow
def test_smollm2_lora_iteration_runs_end_to_end(tmp_path):
    run_train(
        f"paths.root={tmp_path}",
        "lora=lora",
        "trainer.lr=1e-4",
        "data.n_train=8",
        "generation.max_new_tokens=32",
        "eval=none",
        "logger=none",
    )
    report = json.loads(next(tmp_path.rglob("report.json")).read_text())
    row = next(row for row in report["rows"] if row["kind"] == "spin")
    assert row["curves"][0]["rewards/real"] == pytest.approx(0.0, abs=1e-4)
    trained = [spec for spec in specs(tmp_path, "model").values() if "lora" in spec]
    assert len(trained) == 1
    assert list(tmp_path.glob("artifacts/model/*/adapter/adapter_model.safetensors"))
