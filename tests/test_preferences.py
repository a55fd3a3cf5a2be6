"""Preference pairs of the DPO baselines: arith slips, UltraFeedback, users' JSONL, dispatch."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from datasets import Dataset

from spin.config import PreferenceConfig
from spin.data import (
    arith_preferences,
    extract_answer,
    generate_arith,
    load_preference_jsonl,
    load_preferences,
    load_ultrafeedback,
    plausible_mistake,
)
from spin.data.mistakes import EQUATION, OPS
from spin.errors import DataError

ULTRAFEEDBACK = Path(__file__).parent / "fixtures" / "ultrafeedback"
FIXTURE_PAIRS = [
    {
        "prompt": "What is the capital of France?",
        "chosen": "The capital of France is Paris.",
        "rejected": "The capital of France is Lyon.",
    },
    {
        "prompt": "Write a haiku about rain.",
        "chosen": (
            "Soft rain on the roof,\nsilver threads stitch dusk to dawn,\nthe garden drinks deep."
        ),
        "rejected": "Rain is wet.",
    },
    {
        "prompt": "Name a prime number greater than 10.",
        "chosen": "13 is a prime number greater than 10.",
        "rejected": "12 is a prime number greater than 10.",
    },
    {
        "prompt": "Translate 'thank you' into Spanish.",
        "chosen": "Gracias.",
        "rejected": "Merci.",
    },
]


@pytest.fixture(scope="module")
def train_records() -> list[dict]:
    train, _ = generate_arith(200, 0, seed=0, difficulty=[1, 2, 3, 4])
    return train


def chat(prompt: str, reply: str | None) -> list[dict]:
    turns = [{"role": "user", "content": prompt}]
    return turns if reply is None else [*turns, {"role": "assistant", "content": reply}]


def hub_copy(root: Path, rows: list[dict], split: str = "train_prefs") -> Path:
    """A local copy in the hub's layout, as the parquet shards the hub serves."""
    (root / "data").mkdir(parents=True)
    Dataset.from_list(rows).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines))
    return path


# --- arith ------------------------------------------------------------------------------------


def assert_one_carried_slip(solution: str, wrong: str) -> None:
    """``wrong`` is ``solution`` up to one step's result, from which every later step does its
    arithmetic right on the wrong value, to a different final answer."""
    assert extract_answer(wrong) != extract_answer(solution)
    chosen, rejected = solution.splitlines(), wrong.splitlines()
    assert len(chosen) == len(rejected)
    slipped = next(i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if c != r)
    assert chosen[:slipped] == rejected[:slipped]
    head = chosen[slipped][: chosen[slipped].rindex("=")]
    assert rejected[slipped].startswith(head)
    for line in rejected[slipped + 1 : -1]:
        a, op, b, r = EQUATION.search(line).groups()
        assert OPS[op](int(a), int(b)) == int(r), line


def test_arith_pairs_differ_only_from_a_carried_slip_on(train_records):
    pairs = arith_preferences(train_records, seed=0)
    assert len(pairs) == len(train_records)
    for record, pair in zip(train_records, pairs, strict=True):
        assert (pair["prompt"], pair["chosen"]) == (record["prompt"], record["response"])
        assert_one_carried_slip(pair["chosen"], pair["rejected"])


def test_slip_leaves_an_operand_equal_to_the_slipped_value_alone():
    solution = "Tom has 2 * 3 = 6 apples.\nHe buys 6 more: 6 + 6 = 12 apples.\n#### 12"
    for seed in range(20):
        assert_one_carried_slip(solution, plausible_mistake(solution, random.Random(seed)))


def test_arith_pairs_are_seeded(train_records):
    assert arith_preferences(train_records, seed=1) == arith_preferences(train_records, seed=1)
    assert arith_preferences(train_records, seed=1) != arith_preferences(train_records, seed=2)
    # The first records' pairs do not depend on how many records follow.
    assert (
        arith_preferences(train_records[:20], seed=1)
        == arith_preferences(train_records, seed=1)[:20]
    )


def test_mistake_needs_a_worked_solution(train_records):
    with pytest.raises(ValueError, match="'#### n' line"):
        plausible_mistake("The capital of France is Paris.", random.Random(0))
    records = [*train_records[:2], {"prompt": "Hi", "response": "Hello!"}]
    with pytest.raises(DataError, match=r"train record 2: .*source='arith' needs"):
        arith_preferences(records, seed=0)


# --- UltraFeedback ----------------------------------------------------------------------------


def test_ultrafeedback_copy_gives_prompt_and_last_replies_without_ties(caplog):
    with caplog.at_level(logging.INFO, logger="spin.data.preferences"):
        pairs = load_ultrafeedback(str(ULTRAFEEDBACK))
    assert pairs == FIXTURE_PAIRS
    assert "Dropped 1 of 5 preference pairs" in caplog.text
    assert [p["prompt"] for p in load_ultrafeedback(str(ULTRAFEEDBACK), "test_prefs")] == [
        "How many legs does a spider have?"
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"rejected": chat("Q1", None)},
            r"row 1: field 'rejected' has no 'assistant' turn",
        ),
        ({"chosen": chat("Q1", "")}, r"row 1: field 'chosen\[1\]\.content' is empty"),
        ({"prompt": None}, r"row 1: field 'prompt' is missing"),
    ],
)
def test_ultrafeedback_bad_row_names_split_row_and_field(tmp_path, bad, message):
    rows = [
        {"prompt": f"Q{i}", "chosen": chat(f"Q{i}", "good"), "rejected": chat(f"Q{i}", "bad")}
        for i in range(2)
    ]
    rows[1].update(bad)
    root = hub_copy(tmp_path / "copy", rows)
    with pytest.raises(DataError, match=rf"copy split 'train_prefs' {message}"):
        load_ultrafeedback(str(root))


def test_ultrafeedback_missing_column_or_split_is_named(tmp_path):
    root = hub_copy(tmp_path / "copy", [{"prompt": "Q", "chosen": chat("Q", "good")}])
    with pytest.raises(DataError, match=r"field 'rejected' is missing \(columns are"):
        load_ultrafeedback(str(root))
    with pytest.raises(DataError, match="no file for split 'test_prefs'"):
        load_ultrafeedback(str(root), "test_prefs")


# --- users' JSONL -----------------------------------------------------------------------------


def test_preference_jsonl_reads_named_fields_texts_and_chats(tmp_path):
    path = write_lines(
        tmp_path / "prefs.jsonl",
        [
            {"q": "A?", "good": "yes", "bad": "no"},
            "\n",
            {"q": "B?", "good": chat("B?", "right"), "bad": chat("B?", "wrong")},
            {"q": "C?", "good": "same", "bad": "same"},
        ],
    )
    assert load_preference_jsonl(path, "q", "good", "bad") == [
        {"prompt": "A?", "chosen": "yes", "rejected": "no"},
        {"prompt": "B?", "chosen": "right", "rejected": "wrong"},
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "B?", "chosen": "yes"\n', r"prefs\.jsonl line 2: malformed JSON"),
        ({"prompt": "B?", "chosen": "yes"}, r"prefs\.jsonl line 2: field 'rejected' is missing"),
        ({"prompt": "B?", "chosen": 3, "rejected": "x"}, r"line 2: field 'chosen' is a int"),
        ('["B?", "yes", "no"]\n', r"line 2: is a list, expected a JSON object"),
    ],
)
def test_preference_jsonl_errors_name_file_line_and_field(tmp_path, line, message):
    path = write_lines(tmp_path / "prefs.jsonl", [{"prompt": "A?", "chosen": "y", "rejected": "n"}])
    write_lines(path, [path.read_text(), line])
    with pytest.raises(DataError, match=message):
        load_preference_jsonl(path)


# --- dispatch ---------------------------------------------------------------------------------


def test_arith_source_pairs_the_first_n_train_prompts(train_records):
    pairs = load_preferences(PreferenceConfig(source="arith", n=5, seed=3), train_records)
    assert pairs == arith_preferences(train_records[:5], seed=3)
    assert len(load_preferences(PreferenceConfig(), train_records)) == len(train_records)


def test_loaded_sources_draw_a_seeded_nested_sample(tmp_path):
    cfg = PreferenceConfig(source="ultrafeedback", path=str(ULTRAFEEDBACK), n=2, seed=0)
    two = load_preferences(cfg, [])
    three = load_preferences(PreferenceConfig(**{**cfg.__dict__, "n": 3}), [])
    assert len(two) == 2 and all(p in three for p in two)
    assert [p for p in FIXTURE_PAIRS if p in three] == three  # file order kept
    draws = {
        tuple(
            p["prompt"]
            for p in load_preferences(PreferenceConfig(**{**cfg.__dict__, "seed": s}), [])
        )
        for s in range(6)
    }
    assert len(draws) > 1
    assert load_preferences(PreferenceConfig(**{**cfg.__dict__, "n": None}), []) == FIXTURE_PAIRS


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"source": "hh_rlhf"},
            r"baseline\.preferences\.source='hh_rlhf' is not allowed; "
            "expected one of arith, ultrafeedback, jsonl",
        ),
        ({"source": "jsonl"}, r"baseline\.preferences\.path is required"),
        ({"source": "jsonl", "path": "nowhere.jsonl"}, r"nowhere\.jsonl: no such file"),
        ({"n": 0}, r"baseline\.preferences\.n=0: expected a positive number"),
    ],
)
def test_bad_preference_settings_name_the_key(train_records, settings, message):
    with pytest.raises(DataError, match=message):
        load_preferences(PreferenceConfig(**settings), train_records)


def test_no_pairs_is_an_error(tmp_path):
    path = write_lines(tmp_path / "ties.jsonl", [{"prompt": "A", "chosen": "x", "rejected": "x"}])
    with pytest.raises(DataError, match="gave no usable preference pairs"):
        load_preferences(PreferenceConfig(source="jsonl", path=str(path)), [])
