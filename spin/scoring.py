"""Exact-match scoring of a model on held-out problems (GSM8K style: the number after ####).

The score is computed from generations alone, through any generation backend, so the
number reported for every iteration comes from the same decoding as self-play itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

FIELDS = ("prompt", "response")


class Generator(Protocol):
    def generate(self, prompts: list[str], shard_dir: Any = None, desc: str = ...) -> list[str]:
        """Completions of already formatted prompts, in input order."""
        ...


class Formatter(Protocol):
    def prompt_text(self, prompt: str) -> str:
        """The text the model is given for a raw prompt."""
        ...


def check_records(records: list[dict]) -> None:
    """Fail before generating (the slow part) when a record cannot be scored at all."""
    if not records:
        raise ValueError("exact_match needs at least one record; the test split is empty")
    for i, record in enumerate(records):
        for key in FIELDS:
            if not isinstance(record.get(key), str):
                raise ValueError(
                    f"record {i}: field {key!r} must be a string, got {record.get(key)!r}"
                )


def exact_match(
    generator: Generator,
    formatter: Formatter,
    records: list[dict],
    extract_answer: Callable[[str], str | None],
    n_samples: int = 8,
) -> dict:
    """Fraction of ``records`` whose generated final answer equals the reference's.

    An answer that cannot be parsed counts as wrong on either side; ``formatted`` reports
    how often the model ends with a parsable ``#### n`` at all, which separates "does not
    follow the format" from "gets the arithmetic wrong".
    """
    check_records(records)
    prompts = [formatter.prompt_text(r["prompt"]) for r in records]
    generated = generator.generate(prompts, desc="exact_match")
    if len(generated) != len(records):
        raise ValueError(
            f"the generator returned {len(generated)} completions for {len(records)} prompts"
        )
    references = [extract_answer(r["response"]) for r in records]
    answers = [extract_answer(text) for text in generated]
    unscorable = sum(ref is None for ref in references)
    if unscorable:
        log.warning("%d of %d references have no parsable '#### n'", unscorable, len(records))
    correct = [a is not None and a == ref for a, ref in zip(answers, references, strict=True)]
    samples = [
        {
            "prompt": record["prompt"],
            "reference": record["response"],
            "generated": text,
            "correct": ok,
        }
        for record, text, ok in zip(records, generated, correct, strict=True)
    ][:n_samples]
    return {
        "exact_match": sum(correct) / len(records),
        "formatted": sum(a is not None for a in answers) / len(records),
        "n": len(records),
        "samples": samples,
    }
