"""Exact-match scoring with a fake generator whose answers are known."""

from __future__ import annotations

import pytest

from spin.config import GenerationConfig
from spin.data.arith import extract_answer
from spin.data.formatting import PromptFormatter
from spin.generation import HFGenerator
from spin.models import build_tiny
from spin.scoring import exact_match


class FakeGenerator:
    """Answers each formatted prompt from a table, and remembers what it was asked."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.seen: list[str] = []

    def generate(self, prompts, shard_dir=None, desc="generate"):
        self.seen = list(prompts)
        return [self.answers[p] for p in prompts]


class BracketFormatter:
    def prompt_text(self, prompt: str) -> str:
        return f"[{prompt}]"


RECORDS = [
    {"prompt": "1+1", "response": "One and one make 2.\n#### 2"},
    {"prompt": "2*3", "response": "Two threes are 6.\n#### 6"},
    {"prompt": "10-4", "response": "Ten less four is 6.\n#### 6"},
    {"prompt": "5+5", "response": "#### 10"},
]


def test_fractions_match_known_answers():
    generator = FakeGenerator(
        {
            "[1+1]": "It is 2.\n#### 2",  # correct
            "[2*3]": "#### 5",  # formatted, wrong
            "[10-4]": "the answer is 6",  # right number but no '#### n': wrong, unformatted
            "[5+5]": "#### 10.0",  # correct after normalisation
        }
    )
    result = exact_match(generator, BracketFormatter(), RECORDS, extract_answer, n_samples=2)
    assert generator.seen == ["[1+1]", "[2*3]", "[10-4]", "[5+5]"]
    assert result["exact_match"] == pytest.approx(2 / 4)
    assert result["formatted"] == pytest.approx(3 / 4)
    assert result["n"] == 4
    assert result["samples"] == [
        {
            "prompt": "1+1",
            "reference": RECORDS[0]["response"],
            "generated": "It is 2.\n#### 2",
            "correct": True,
        },
        {
            "prompt": "2*3",
            "reference": RECORDS[1]["response"],
            "generated": "#### 5",
            "correct": False,
        },
    ]


def test_unparsable_reference_never_counts_as_correct():
    records = [{"prompt": "q", "response": "no final answer here"}]
    generator = FakeGenerator({"[q]": "no final answer either"})
    result = exact_match(generator, BracketFormatter(), records, extract_answer)
    assert result["exact_match"] == 0.0
    assert result["formatted"] == 0.0


def test_bad_records_fail_before_generating():
    generator = FakeGenerator({})
    with pytest.raises(ValueError, match=r"record 1: field 'response'"):
        exact_match(generator, BracketFormatter(), [RECORDS[0], {"prompt": "x"}], extract_answer)
    with pytest.raises(ValueError, match="at least one record"):
        exact_match(generator, BracketFormatter(), [], extract_answer)
    assert generator.seen == []


def test_scores_the_tiny_model_through_the_real_generator_and_formatter():
    model, tokenizer = build_tiny()
    generator = HFGenerator(model, tokenizer, GenerationConfig(max_new_tokens=4, batch_size=2))
    result = exact_match(generator, PromptFormatter(tokenizer), RECORDS, extract_answer)
    # A random model does not produce '#### n'.
    assert (result["exact_match"], result["formatted"], result["n"]) == (0.0, 0.0, 4)
    assert [s["prompt"] for s in result["samples"]] == [r["prompt"] for r in RECORDS]
