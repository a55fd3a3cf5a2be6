"""Tokenised SPIN pairs for tests on the tiny model."""

from __future__ import annotations

from spin.trainer import training_arguments


def encode(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Chat-formatted prompt plus response and eos, with the response mask."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


def make_pairs(tokenizer, texts: list[tuple[str, str, str]]) -> list[dict]:
    """(prompt, real, generated) texts as the pair records the trainer consumes."""
    pairs = []
    for prompt, real, generated in texts:
        real_ids, real_mask = encode(tokenizer, prompt, real)
        gen_ids, gen_mask = encode(tokenizer, prompt, generated)
        pairs.append(
            {
                "real_input_ids": real_ids,
                "real_response_mask": real_mask,
                "generated_input_ids": gen_ids,
                "generated_response_mask": gen_mask,
            }
        )
    return pairs


def tiny_training_args(output_dir, batch_size: int, **overrides):
    """AdamW at a constant lr 1e-3 with no warmup: a few steps visibly move the tiny model."""
    settings = dict(
        lr=1e-3,
        epochs=1,
        batch_size=batch_size,
        grad_accumulation=1,
        optimizer="adamw",
        lr_scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        precision="fp32",
        gradient_checkpointing=False,
        seed=0,
        logging_steps=1,
    )
    return training_arguments(str(output_dir), **(settings | overrides))
