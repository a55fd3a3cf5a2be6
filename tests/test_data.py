"""The data package: synthetic problems, users' files, splits and the shared prompt format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset

from spin.config import DataConfig
from spin.data import (
    PromptFormatter,
    Splits,
    extract_answer,
    generate_arith,
    load_splits,
)
from spin.data.loaders import deduplicate, load_hf, load_jsonl, load_ultrachat
from spin.errors import DataError
from spin.models import build_tiny

FIXTURES = Path(__file__).parent / "fixtures"
ULTRACHAT = FIXTURES / "data_ultrachat"
STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def equations(response: str) -> list[tuple[int, str, int, int]]:
    """The (a, op, b, result) of every step line, asserting one equation per step line."""
    found = []
    for line in response.splitlines()[:-1]:
        matches = STEP.findall(line)
        assert len(matches) == 1, f"step line without exactly one equation: {line!r}"
        a, op, b, r = matches[0]
        found.append((int(a), op, int(b), int(r)))
    return found


# --- synthetic arithmetic -------------------------------------------------------------------


def test_arith_is_deterministic_for_a_seed():
    assert generate_arith(40, 10, seed=3, difficulty=[2, 3]) == generate_arith(
        40, 10, seed=3, difficulty=[2, 3]
    )
    assert generate_arith(40, 10, seed=3, difficulty=[2, 3]) != generate_arith(
        40, 10, seed=4, difficulty=[2, 3]
    )


@pytest.mark.parametrize("sizes", [(5, 3), (60, 20), (300, 100)])
def test_train_and_test_never_share_a_problem_across_seeds_and_sizes(sizes):
    splits = [generate_arith(*sizes, seed=seed, difficulty=[1, 2, 3]) for seed in (0, 1, 2)]
    train_prompts = {r["prompt"] for train, _ in splits for r in train}
    test_prompts = {r["prompt"] for _, test in splits for r in test}
    assert not train_prompts & test_prompts
    for train, test in splits:
        assert (len(train), len(test)) == sizes
        assert len({r["prompt"] for r in train}) == len(train)
        assert len({r["prompt"] for r in test}) == len(test)


def test_growing_the_data_set_keeps_the_earlier_problems():
    small_train, small_test = generate_arith(50, 20, seed=5, difficulty=[2, 3])
    big_train, big_test = generate_arith(150, 40, seed=5, difficulty=[2, 3])
    assert big_train[:50] == small_train
    assert big_test[:20] == small_test


def test_solutions_are_correct_step_by_step():
    train, test = generate_arith(300, 100, seed=11, difficulty=[1, 2, 3, 4])
    apply = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
    for record in train + test:
        steps = equations(record["response"])
        for index, (a, op, b, result) in enumerate(steps):
            if op == "/":
                assert a == b * result, record["response"]
            else:
                assert apply[op](a, b) == result, record["response"]
            assert result >= 0
            if index:
                assert a == steps[index - 1][3], f"step does not use the last result: {record}"
        assert record["response"].splitlines()[-1] == f"#### {steps[-1][3]}"
        assert extract_answer(record["response"]) == str(steps[-1][3])


@pytest.mark.parametrize("difficulty", [[1], [2, 3], [4, 5]])
def test_difficulty_sets_the_number_of_steps(difficulty):
    train, _ = generate_arith(120, 10, seed=0, difficulty=difficulty)
    counts = {len(equations(r["response"])) for r in train}
    assert counts == set(difficulty)


def test_problems_mix_stories_and_operations():
    train, _ = generate_arith(300, 10, seed=2, difficulty=[2, 3])
    prompts = " ".join(r["prompt"] for r in train)
    for question in (
        "have now?",
        "dollars does",
        "How old is",
        "kilometres does",
        "does each friend get?",
        "boxes does the bakery fill?",
    ):
        assert question in prompts
    ops = [{op for _, op, _, _ in equations(r["response"])} for r in train]
    assert set().union(*ops) == {"+", "-", "*", "/"}
    assert sum(len(o) >= 2 for o in ops) > len(train) * 0.8


def test_bad_difficulty_names_the_setting():
    with pytest.raises(ValueError, match=r"data\.difficulty"):
        generate_arith(10, 5, seed=0, difficulty=[0])
    with pytest.raises(ValueError, match=r"data\.difficulty"):
        generate_arith(10, 5, seed=0, difficulty=[])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\n#### 19", "19"),
        ("#### 1,200.", "1200"),
        ("#### 19.0", "19"),
        ("#### 2.50", "2.5"),
        ("#### $ 7", "7"),
        ("#### -3", "-3"),
        ("#### 4\nwait\n####  12 apples", "12"),
        ("the answer is 19", None),
        ("#### nineteen", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# --- users' data ----------------------------------------------------------------------------


def test_jsonl_with_a_field_mapping(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [{"q": "One?", "a": "1", "extra": 0}, "\n", "   \n", {"q": "Two?", "a": "2"}],
    )
    records = load_jsonl(path, prompt_field="q", response_field="a")
    assert records == [{"prompt": "One?", "response": "1"}, {"prompt": "Two?", "response": "2"}]


def test_jsonl_with_chat_messages_takes_the_first_exchange(tmp_path):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi, ask me anything."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
        {"role": "assistant", "content": "Second answer"},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"conversation": messages}])
    records = load_jsonl(path, messages_field="conversation")
    assert records == [{"prompt": "First question", "response": "First answer"}]


BAD_ROWS = [
    ('{"prompt": "x", "response": \n', "malformed JSON"),
    ("[1, 2]\n", "expected a JSON object"),
    ({"prompt": "Hi"}, "field 'response' is missing"),
    ({"prompt": "Hi", "response": None}, "field 'response' is missing"),
    ({"prompt": " \t", "response": "Yo"}, "field 'prompt' is empty"),
    ({"prompt": 3, "response": "Yo"}, "field 'prompt' is a int"),
]
BAD_CHATS = [
    ({"messages": "hello"}, "field 'messages' is not a list"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "field 'messages' has no 'user' turn"),
    ({"messages": [{"role": "user", "content": "q"}]}, "no 'assistant' turn after"),
    ({"messages": [{"role": "user", "content": ""}]}, "field 'messages[0].content' is empty"),
    ({"messages": [3]}, "field 'messages[0]' is not an object"),
]


@pytest.mark.parametrize(("row", "fragment"), BAD_ROWS)
def test_malformed_row_names_file_line_and_field(tmp_path, row, fragment):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "ok", "response": "ok"}, "\n", row])
    with pytest.raises(DataError) as error:
        load_jsonl(path)
    assert str(error.value).startswith("data.jsonl line 3: ")
    assert fragment in str(error.value)
    assert "expected" in str(error.value)


@pytest.mark.parametrize(("row", "fragment"), BAD_CHATS)
def test_malformed_chat_row_names_file_line_and_field(tmp_path, row, fragment):
    path = write_jsonl(tmp_path / "chat.jsonl", [row])
    with pytest.raises(DataError) as error:
        load_jsonl(path, messages_field="messages")
    assert str(error.value).startswith("chat.jsonl line 1: ")
    assert fragment in str(error.value)


@pytest.mark.parametrize("row", [{"prompt": "q", "response": "a"}, {"messages": None}])
def test_chat_row_without_its_messages_field_is_said_to_miss_it(tmp_path, row):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, row])
    with pytest.raises(DataError) as error:
        load_jsonl(path, messages_field="messages")
    assert str(error.value) == (
        "chat.jsonl line 2: field 'messages' is missing (expected a list of {role, content} turns)"
    )


def test_hf_loader_reads_local_files_and_split_directories(tmp_path):
    rows = [{"question": f"Q{i}", "answer": f"A{i}"} for i in range(3)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    write_jsonl(tmp_path / "test.jsonl", rows[:1])
    train = load_hf(str(tmp_path), "train", "question", "answer")
    assert train == [{"prompt": f"Q{i}", "response": f"A{i}"} for i in range(3)]
    assert load_hf(str(tmp_path / "test.jsonl"), "train", "question", "answer") == train[:1]
    with pytest.raises(DataError, match="no file for split 'validation'"):
        load_hf(str(tmp_path), "validation", "question", "answer")


def test_hf_loader_errors_name_the_row_and_field(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"q": "Q0", "a": "A0"}, {"q": "Q1", "a": ""}])
    with pytest.raises(DataError, match=r"rows\.jsonl split 'train' row 1: field 'a' is empty"):
        load_hf(str(path), "train", "q", "a")
    with pytest.raises(DataError, match=r"field 'answer' is missing \(columns are"):
        load_hf(str(path), "train", "q", "answer")


def test_ultrachat_loader_takes_first_turns():
    records = load_ultrachat(str(ULTRACHAT), "train_sft")
    assert len(records) == 6
    assert records[0] == {
        "prompt": "What is the capital of France?",
        "response": "The capital of France is Paris.",
    }
    assert all("Rome" not in r["response"] for r in records)
    assert len(load_ultrachat(str(ULTRACHAT / "test_sft.jsonl"), "test_sft")) == 2


def test_deduplicate_keeps_the_first_of_each_prompt():
    records = [
        {"prompt": "a", "response": "1"},
        {"prompt": "b", "response": "2"},
        {"prompt": " a\n", "response": "3"},
        {"prompt": "a", "response": "4"},
    ]
    kept, dropped = deduplicate(records)
    assert kept == records[:2]
    assert dropped == 2


# --- splits ---------------------------------------------------------------------------------


def test_arith_splits_default_sizes():
    splits = load_splits(DataConfig(name="arith"))
    assert isinstance(splits, Splits)
    assert (len(splits.train), len(splits.test)) == (256, 100)
    assert re.fullmatch(r"[0-9a-f]{64}", splits.fingerprint)


def test_ultrachat_splits_are_deduplicated():
    cfg = DataConfig(
        name="ultrachat",
        source="ultrachat",
        path=str(ULTRACHAT),
        split="train_sft",
        test_split="test_sft",
    )
    splits = load_splits(cfg)
    assert (len(splits.train), len(splits.test)) == (5, 2)
    assert [r["prompt"] for r in splits.train].count("What is the capital of France?") == 1
    raw = load_splits(DataConfig(**{**cfg.__dict__, "deduplicate": False}))
    assert len(raw.train) == 6
    assert raw.fingerprint != splits.fingerprint
    few = load_splits(DataConfig(**{**cfg.__dict__, "n_train": 2, "n_test": 1}))
    assert (few.train, few.test) == (splits.train[:2], splits.test[:1])


def test_held_out_test_split_is_seeded_and_disjoint(tmp_path):
    rows = [{"prompt": f"Question {i}", "response": f"Answer {i}"} for i in range(40)]
    path = write_jsonl(tmp_path / "mine.jsonl", [*rows, rows[0]])
    cfg = DataConfig(name="mine", source="jsonl", path=str(path), seed=1)
    default = load_splits(cfg)
    assert (len(default.train), len(default.test)) == (38, 2)  # 5% of 40 deduplicated rows
    sized = load_splits(DataConfig(**{**cfg.__dict__, "n_test": 10}))
    assert (len(sized.train), len(sized.test)) == (30, 10)
    assert not {r["prompt"] for r in sized.train} & {r["prompt"] for r in sized.test}
    assert load_splits(DataConfig(**{**cfg.__dict__, "n_test": 10})) == sized
    reseeded = load_splits(DataConfig(**{**cfg.__dict__, "n_test": 10, "seed": 2}))
    assert reseeded.test != sized.test
    with pytest.raises(DataError, match="leaves no training records"):
        load_splits(DataConfig(**{**cfg.__dict__, "n_test": 40}))


def test_fingerprint_follows_the_data_not_the_config(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl", [{"prompt": f"Q{i}", "response": "A"} for i in range(5)]
    )
    cfg = DataConfig(name="mine", source="jsonl", path=str(path))
    before = load_splits(cfg).fingerprint
    assert load_splits(cfg).fingerprint == before
    write_jsonl(path, [{"prompt": f"Q{i}", "response": "B"} for i in range(5)])
    assert load_splits(cfg).fingerprint != before
    arith = load_splits(DataConfig(name="arith", n_train=8, n_test=4)).fingerprint
    assert load_splits(DataConfig(name="arith", n_train=8, n_test=4, seed=1)).fingerprint != arith


def test_missing_path_is_named():
    with pytest.raises(DataError, match=r"data\.path is required"):
        load_splits(DataConfig(name="mine", source="jsonl"))
    with pytest.raises(DataError, match=r"no such file \(data\.path\)"):
        load_splits(DataConfig(name="mine", source="jsonl", path="/nonexistent/data.jsonl"))


# --- prompt formatting ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny()[1]


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_chat_format_uses_the_template(tokenizer):
    formatter = PromptFormatter(tokenizer)
    assert (
        formatter.prompt_text("2+2?") == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert formatter.response_text("4") == "4<|im_end|>\n"


def test_response_mask_covers_exactly_the_response(tokenizer):
    formatter = PromptFormatter(tokenizer)
    encoded = formatter.encode("What is 3 * 4?", "3 * 4 = 12\n#### 12", 256, 512)
    ids, mask = encoded["input_ids"], encoded["response_mask"]
    assert len(ids) == len(mask)
    boundary = mask.index(1)
    assert set(mask[:boundary]) == {0} and set(mask[boundary:]) == {1}
    assert decode(tokenizer, ids[:boundary]) == formatter.prompt_text("What is 3 * 4?")
    assert decode(tokenizer, ids[boundary:]) == formatter.response_text("3 * 4 = 12\n#### 12")


def test_truncation_keeps_the_prompt_end_and_the_response_start(tokenizer):
    formatter = PromptFormatter(tokenizer)
    prompt, response = "x" * 50 + " the question?", "y" * 100
    encoded = formatter.encode(prompt, response, max_prompt_length=20, max_length=48)
    ids, mask = encoded["input_ids"], encoded["response_mask"]
    assert len(ids) == 48 and mask.count(0) == 20
    assert formatter.prompt_text(prompt).endswith(decode(tokenizer, ids[:20]))
    assert formatter.response_text(response).startswith(decode(tokenizer, ids[20:]))
    short = formatter.encode("hi", "ok", max_prompt_length=40, max_length=48)
    assert decode(tokenizer, short["input_ids"]) == formatter.prompt_text("hi") + "ok<|im_end|>\n"
    with pytest.raises(ValueError, match="no response token fits"):
        formatter.encode(prompt, response, max_prompt_length=20, max_length=20)


def test_plain_template_format(tokenizer):
    formatter = PromptFormatter(tokenizer, "### Instruction: {prompt}\n\n### Response: ")
    assert (
        formatter.prompt_text("Add 2 and 3.") == "### Instruction: Add 2 and 3.\n\n### Response: "
    )
    assert formatter.response_text("5") == "5<|im_end|>"
    encoded = formatter.encode("Add 2 and 3.", "5", 64, 128)
    assert decode(tokenizer, encoded["input_ids"]).endswith("### Response: 5<|im_end|>")
    assert sum(encoded["response_mask"]) == 2
    braces = PromptFormatter(tokenizer, '{"q": "{prompt}"} ->')
    assert braces.prompt_text("hi") == '{"q": "hi"} ->'


def test_chat_format_without_a_template_names_the_setting():
    tokenizer = build_tiny()[1]
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"generation\.prompt_format='chat' needs a tokenizer"):
        PromptFormatter(tokenizer, "chat")
    with pytest.raises(ValueError, match=r"must be 'chat' or a template"):
        PromptFormatter(tokenizer, "no placeholder")


def test_chat_template_without_a_clean_boundary_is_rejected():
    tokenizer = build_tiny()[1]
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT>{% endif %}"
    )
    with pytest.raises(ValueError, match="prompt/response boundary"):
        PromptFormatter(tokenizer).response_text("4")
