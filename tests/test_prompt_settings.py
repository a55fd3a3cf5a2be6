"""The settings that let a preset follow the official SPIN code: the system turn, separate
generation and training formats, the official truncation rule and a seeded prompt sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_config, train_in_process
from datasets import Dataset, load_from_disk
from tiny_pairs import make_pairs, tiny_training_args

from spin.config import DataConfig
from spin.data import PromptFormatter, load_splits
from spin.models import build_tiny
from spin.stages.prompts import formatter
from spin.trainer import SPINTrainer, with_lengths

INSTRUCTION = "### Instruction: {prompt}\n\n### Response: "
EMPTY_SYSTEM = "<|im_start|>system\n<|im_end|>\n"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny()[1]


def test_an_empty_system_turn_is_rendered_before_the_user_turn(tokenizer):
    plain = PromptFormatter(tokenizer)
    with_system = PromptFormatter(tokenizer, system_prompt="")
    assert with_system.prompt_text("2+2?") == EMPTY_SYSTEM + plain.prompt_text("2+2?")
    # The response is the same text whatever precedes the user turn.
    assert (
        with_system.response_text("4", "2+2?")
        == plain.response_text("4", "2+2?")
        == ("4<|im_end|>\n")
    )
    assert (
        PromptFormatter(tokenizer, system_prompt="Be brief.")
        .prompt_text("hi")
        .startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi")
    )


def lengths(encoded: dict[str, list[int]]) -> tuple[int, int]:
    """(prompt tokens, response tokens) of an encoded example."""
    mask = encoded["response_mask"]
    return mask.count(0), mask.count(1)


def test_pair_truncation_cuts_a_long_prompt_only_when_the_pair_does_not_fit(tokenizer):
    prompt, short, long = "p" * 60, "a" * 10, "b" * 30
    prompt_mode = PromptFormatter(tokenizer)
    pair_mode = PromptFormatter(tokenizer, truncation="pair")
    full_prompt = len(prompt_mode.prompt_ids(prompt, 10_000))
    # The prompt alone exceeds max_prompt_length, but prompt + longer response fit.
    limits = (full_prompt - 5, full_prompt + 40)
    assert lengths(prompt_mode.encode(prompt, short, *limits))[0] == full_prompt - 5
    real, generated = pair_mode.encode_pair(prompt, [short, long], *limits)
    assert lengths(real)[0] == lengths(generated)[0] == full_prompt
    # Generation feeds the whole prompt: the official script never cuts one.
    assert len(pair_mode.prompt_ids(prompt, limits[0])) == full_prompt
    # Too long together: the prompt keeps its last max_prompt_length tokens, and since the
    # pair still does not fit, both responses keep max_length - max_prompt_length tokens.
    max_prompt, max_length = 40, 60
    real, generated = pair_mode.encode_pair(prompt, [short, long * 2], max_prompt, max_length)
    assert lengths(real) == (max_prompt, len(tokenizer(short + "<|im_end|>\n").input_ids))
    assert lengths(generated) == (max_prompt, max_length - max_prompt)
    assert real["input_ids"][:max_prompt] == pair_mode.prompt_ids(prompt, 0)[-max_prompt:]


def write_records(path: Path, n: int) -> Path:
    rows = [{"prompt": f"question {i}", "response": f"answer {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_random_selection_is_a_seeded_nested_sample(tmp_path):
    path = write_records(tmp_path / "data.jsonl", 40)

    def prompts(n: int, seed: int = 42, selection: str = "random") -> list[str]:
        cfg = DataConfig(
            name="mine", source="jsonl", path=str(path), n_train=n, n_test=5, seed=seed
        )
        cfg.selection = selection
        return [r["prompt"] for r in load_splits(cfg).train]

    first = prompts(10, selection="first")
    sample = prompts(10)
    assert len(sample) == 10 and sample != first
    assert sample == prompts(10)  # the same seed draws the same prompts
    assert set(sample) < set(prompts(20))  # a larger sample holds the smaller one
    assert sample != prompts(10, seed=7)


def test_official_pairing_generates_in_one_format_and_trains_in_the_chat_template(tokenizer):
    cfg = compose_config("experiment=tiny", "generation=official_hf", "generation.system_prompt=")
    generate = formatter(cfg, tokenizer, training=False).prompt_text("Add 2 and 3.")
    train = formatter(cfg, tokenizer).prompt_text("Add 2 and 3.")
    assert generate == INSTRUCTION.replace("{prompt}", "Add 2 and 3.")
    assert train.startswith(EMPTY_SYSTEM + "<|im_start|>user\nAdd 2 and 3.")


def test_the_chain_trains_on_what_the_settings_say(tmp_path, tokenizer):
    """The tiny chain with the preset's formatting: the reference pairs hold the chat prompt
    with its empty system turn, and the generations' key names the system turn."""
    train_in_process(
        "experiment=tiny",
        f"paths.root={tmp_path}",
        "eval=none",
        "generation.system_prompt=",
        "model.truncation=pair",
    )
    artifacts = tmp_path / "artifacts"
    (gen_spec,) = [json.loads(p.read_text()) for p in artifacts.glob("generations/*/spec.json")]
    assert gen_spec["generation"]["system_prompt"] == ""
    assert "train_prompt_format" not in gen_spec["generation"]
    (ref,) = [p.parent for p in artifacts.glob("reference/*/spec.json")]
    spec = json.loads((ref / "spec.json").read_text())
    assert spec["system_prompt"] == "" and spec["truncation"] == "pair"
    first = load_from_disk(str(ref / "pairs"))[0]
    prompt_end = first["real_response_mask"].index(1)
    text = tokenizer.decode(first["real_input_ids"][:prompt_end], skip_special_tokens=False)
    assert text.startswith(EMPTY_SYSTEM + "<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\n")


def batch_orders(tiny, tmp_path, group_by_length: bool) -> list[list[int]]:
    """The packed lengths of each batch of an epoch, as the Trainer would draw them."""
    model, tokenizer = tiny
    texts = [("q", "a" * (1 + 7 * (i % 8)), "b") for i in range(32)]
    dataset = with_lengths(Dataset.from_list(make_pairs(tokenizer, texts)))
    args = tiny_training_args(tmp_path, 4, group_by_length=group_by_length)
    trainer = SPINTrainer(
        model=model, args=args, train_dataset=dataset, loss_name="sigmoid", beta=0.1
    )
    order = list(trainer._get_train_sampler())
    lengths = dataset["length"]
    return [[lengths[i] for i in order[k : k + 4]] for k in range(0, len(order), 4)]


def test_batch_order_groups_lengths_only_when_asked(tiny, tmp_path):
    grouped = batch_orders(tiny, tmp_path, group_by_length=True)
    shuffled = batch_orders(tiny, tmp_path, group_by_length=False)

    def spread(batches: list[list[int]]) -> int:
        return sum(max(b) - min(b) for b in batches)

    assert spread(shuffled) > 2 * spread(grouped)
    assert shuffled == batch_orders(tiny, tmp_path, group_by_length=False)  # seeded
    assert sorted(x for b in shuffled for x in b) == sorted(x for b in grouped for x in b)
