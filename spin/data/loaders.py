"""Loading users' SFT data into ``{"prompt", "response"}`` records, validated row by row.

A bad row found mid-training wastes hours, so every row is checked up front and the first
problem raises :class:`DataError` naming the file, the row and the field, and what was
expected. Rows either carry the prompt and response in two fields, or a chat ``messages``
list from which the first user turn and the first assistant turn after it are taken (the
paper's first-turn UltraChat setting).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spin.errors import DataError

EXPECTED_TEXT = "expected a non-empty string"
EXPECTED_MESSAGES = "expected a list of {role, content} turns"
# Local formats the datasets library reads, by file extension.
BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class FieldMap:
    """Which fields of a row hold the prompt and response (or the chat turns)."""

    prompt: str | None = "prompt"
    response: str | None = "response"
    messages: str | None = None

    def check(self) -> None:
        if self.messages is None and (not self.prompt or not self.response):
            raise DataError(
                "data.prompt_field and data.response_field must both be set, "
                "or data.messages_field for chat-formatted rows"
            )


def _text(value: Any, where: str, field: str) -> str:
    if value is None:
        raise DataError(f"{where}: field {field!r} is missing ({EXPECTED_TEXT})")
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is a {type(value).__name__} ({EXPECTED_TEXT})")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty ({EXPECTED_TEXT})")
    return value


def _turns(messages: Any, where: str, field: str) -> list[Mapping]:
    """A chat field's turns, checked to be a list of objects."""
    if messages is None:  # absent from the row, or null
        raise DataError(f"{where}: field {field!r} is missing ({EXPECTED_MESSAGES})")
    if not isinstance(messages, list):
        raise DataError(f"{where}: field {field!r} is not a list ({EXPECTED_MESSAGES})")
    for index, turn in enumerate(messages):
        if not isinstance(turn, Mapping):
            raise DataError(
                f"{where}: field '{field}[{index}]' is not an object ({EXPECTED_MESSAGES})"
            )
    return messages


def _first_turns(messages: Any, where: str, field: str) -> dict:
    """The first user turn and the first assistant turn that follows it."""
    user = None
    for index, turn in enumerate(_turns(messages, where, field)):
        role = turn.get("role")
        if user is None and role == "user":
            user = _text(turn.get("content"), where, f"{field}[{index}].content")
        elif user is not None and role == "assistant":
            response = _text(turn.get("content"), where, f"{field}[{index}].content")
            return {"prompt": user, "response": response}
    missing = "'user' turn" if user is None else "'assistant' turn after the first 'user' turn"
    raise DataError(f"{where}: field {field!r} has no {missing} ({EXPECTED_MESSAGES})")


def to_record(row: Any, where: str, fields: FieldMap) -> dict:
    """Map one row to a record, raising DataError on the first problem."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: is a {type(row).__name__}, expected a JSON object")
    if fields.messages is not None:
        return _first_turns(row.get(fields.messages), where, fields.messages)
    return {
        "prompt": _text(row.get(fields.prompt), where, fields.prompt),
        "response": _text(row.get(fields.response), where, fields.response),
    }


def jsonl_rows(path: str | Path, key: str) -> Iterator[tuple[str, Any]]:
    """Each parsed row of a JSON-lines file with its location, ``"<file> line <n>"`` (from 1),
    for error messages; blank lines are skipped. ``key`` is the config key naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file ({key})")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{where}: malformed JSON at column {error.colno}: {error.msg} "
                    "(expected one JSON object per line)"
                ) from error
            yield where, row


def load_jsonl(
    path: str | Path,
    prompt_field: str | None = "prompt",
    response_field: str | None = "response",
    messages_field: str | None = None,
) -> list[dict]:
    """Records from a JSON-lines file; blank lines are skipped, line numbers count from 1."""
    fields = FieldMap(prompt_field, response_field, messages_field)
    fields.check()
    return [to_record(row, where, fields) for where, row in jsonl_rows(path, "data.path")]


def _split_files(directory: Path, split: str) -> list[Path]:
    """Files of ``split`` in a local directory: ``<split>.jsonl``, ``<split>-00000-of-....parquet``,
    directly or under ``data/`` as in a downloaded hub snapshot."""
    found = []
    for folder in (directory, directory / "data"):
        if folder.is_dir():
            found += [
                p
                for p in sorted(folder.iterdir())
                if p.suffix in BUILDERS and (p.stem == split or p.stem.startswith(f"{split}-"))
            ]
    return found


def _open_dataset(path: str, split: str):
    """A local file, a local directory (split name -> file) or a hub id, via ``datasets``."""
    from datasets import load_dataset

    local = Path(path)
    if local.is_dir():
        files = _split_files(local, split)
        if not files:
            raise DataError(
                f"{path}: no file for split {split!r} (expected {split}.jsonl, {split}.json "
                f"or {split}-*.parquet in the directory or its data/ folder)"
            )
        local = files[0]
        data_files = [str(f) for f in files]
    elif local.is_file():
        data_files = [str(local)]
    else:
        return load_dataset(path, split=split)
    builder = BUILDERS.get(local.suffix)
    if builder is None:
        raise DataError(f"{path}: unsupported file type (expected one of {sorted(BUILDERS)})")
    return load_dataset(builder, data_files={split: data_files}, split=split)


def _require_columns(dataset: Any, where: str, names: list[str]) -> None:
    """Fail before reading any row when a whole column is absent (a wrong field name)."""
    for name in names:
        if name not in dataset.column_names:
            raise DataError(
                f"{where}: field {name!r} is missing (columns are {dataset.column_names})"
            )


def load_hf(
    path: str,
    split: str = "train",
    prompt_field: str | None = "prompt",
    response_field: str | None = "response",
    messages_field: str | None = None,
) -> list[dict]:
    """Records from a Hugging Face dataset; errors name the row index, ``dataset[index]``."""
    fields = FieldMap(prompt_field, response_field, messages_field)
    fields.check()
    dataset = _open_dataset(path, split)
    wanted = [fields.messages] if fields.messages else [fields.prompt, fields.response]
    _require_columns(dataset, f"{path} split {split!r}", wanted)
    return [
        to_record(row, f"{path} split {split!r} row {index}", fields)
        for index, row in enumerate(dataset)
    ]


def load_ultrachat(path: str, split: str = "train_sft") -> list[dict]:
    """First-turn pairs of HuggingFaceH4/ultrachat_200k (rows: prompt, prompt_id, messages).

    The paper trains on the first user turn and the first assistant reply only.
    """
    return load_hf(path, split, prompt_field=None, response_field=None, messages_field="messages")


def deduplicate(records: list[dict]) -> tuple[list[dict], int]:
    """Keep the first record of each prompt (ignoring surrounding whitespace); count the rest."""
    seen: set[str] = set()
    kept = []
    for record in records:
        key = record["prompt"].strip()
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept, len(records) - len(kept)
