"""Pairs an iteration trains on, read from a data set instead of generated (``spin.given_pairs``).

The SPIN authors released every iteration's pairs as hub data sets (UCLA-AGI/SPIN_iter0 to
SPIN_iter3). Each row holds two chats, ``real`` and ``generated``, each a user turn and an
assistant turn (the layout uclaml/SPIN's spin/generate.py writes; its spin/run_spin.py takes
the prompt from the user turn of ``real``). Training on them reproduces an iteration on the
authors' exact pairs. Every row is validated before any model work, as the SFT data is, and
repeated prompts (users report duplicated rows in the released sets) are counted, and
dropped unless ``data.deduplicate`` is off: one rule for the given and the generated pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from spin.data.loaders import (
    EXPECTED_MESSAGES,
    _open_dataset,
    _require_columns,
    _split_files,
    _text,
    _turns,
    deduplicate,
    jsonl_rows,
)
from spin.data.preferences import _subset
from spin.errors import DataError

log = logging.getLogger(__name__)


def _jsonl_files(path: Path, split: str) -> list[Path]:
    """The JSON-lines files of ``split`` at a local ``path``: the file itself, or a directory's
    split files when all of them are JSON lines; empty for anything else."""
    if path.is_file():
        return [path] if path.suffix == ".jsonl" else []
    files = _split_files(path, split) if path.is_dir() else []
    return files if files and all(f.suffix == ".jsonl" for f in files) else []


def _rows(path: str, split: str, fields: list[str], key: str) -> Iterator[tuple[str, Any]]:
    """Each row with its location for error messages. JSON lines are read line by line, so a
    malformed row is named by its line rather than failing the type inference of the whole
    file in ``datasets``; parquet files and hub ids go through ``datasets``, rows by index."""
    files = _jsonl_files(Path(path), split)
    for file in files:
        yield from jsonl_rows(file, f"{key}.path")
    if files:
        return
    dataset = _open_dataset(path, split)
    where = f"{path} split {split!r}"
    _require_columns(dataset, where, fields)
    for index, row in enumerate(dataset.select_columns(fields)):
        yield f"{where} row {index}", row


def _exchange(messages: Any, where: str, field: str) -> tuple[str, Any, str]:
    """The first user turn's text, and the content of the first assistant turn after it with
    that content's field name (its check is the caller's: real and generated differ)."""
    turns = _turns(messages, where, field)
    roles = [turn.get("role") for turn in turns]
    if "user" not in roles:
        raise DataError(f"{where}: field {field!r} has no 'user' turn ({EXPECTED_MESSAGES})")
    user = roles.index("user")
    if "assistant" not in roles[user + 1 :]:
        raise DataError(
            f"{where}: field {field!r} has no 'assistant' turn after the first 'user' turn "
            f"({EXPECTED_MESSAGES})"
        )
    reply = roles.index("assistant", user + 1)
    prompt = _text(turns[user].get("content"), where, f"{field}[{user}].content")
    return prompt, turns[reply].get("content"), f"{field}[{reply}].content"


def _pair(row: Any, where: str, real_field: str, generated_field: str) -> dict[str, str]:
    """One validated pair. The real response must be non-empty text; a generated one may be
    empty (a model can stop at once, and its own generations are kept as they come), but
    both chats must start from the same prompt."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: is a {type(row).__name__}, expected a JSON object")
    prompt, real, real_name = _exchange(row.get(real_field), where, real_field)
    asked, generated, generated_name = _exchange(row.get(generated_field), where, generated_field)
    if asked.strip() != prompt.strip():
        raise DataError(
            f"{where}: the 'user' turn of field {generated_field!r} differs from that of "
            f"{real_field!r} (expected both chats to answer the same prompt)"
        )
    if not isinstance(generated, str):
        raise DataError(
            f"{where}: field {generated_name!r} is a {type(generated).__name__} (expected a string)"
        )
    return {"prompt": prompt, "real": _text(real, where, real_name), "generated": generated}


def load_given_pairs(
    cfg: Any, key: str, drop_repeats: bool = True
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The pairs of one ``spin.given_pairs.<t>`` entry (``key`` names it in messages) as
    ``prompt``, ``real`` and ``generated`` texts, ``n`` of them if set; with ``drop_repeats``
    each prompt once (the chain passes ``data.deduplicate``, so given and generated pairs
    share one rule). Also where they came from, for the record: path, split, rows read, and
    how many repeat an earlier row's prompt (counted, and logged, whether dropped or not)."""
    fields = [cfg.real_field, cfg.generated_field]
    rows = _rows(cfg.path, cfg.split, fields, key)
    pairs = [_pair(row, where, *fields) for where, row in rows]
    unique, repeats = deduplicate(pairs)
    if repeats:
        fate = "dropped" if drop_repeats else "kept (data.deduplicate=false)"
        log.warning(
            "%s: %s %d of %d rows of %s whose prompt repeats an earlier row's",
            key,
            fate,
            repeats,
            len(pairs),
            cfg.path,
        )
    kept = _subset(unique if drop_repeats else pairs, cfg.n, cfg.seed)
    if not kept:
        raise DataError(f"{key}.path={cfg.path!r} split {cfg.split!r} holds no pairs")
    log.info("%s: %d pairs from %s split %r", key, len(kept), cfg.path, cfg.split)
    source = {
        "path": cfg.path,
        "split": cfg.split,
        "rows": len(pairs),
        "repeated_prompts": repeats,
        "repeats_dropped": drop_repeats,
    }
    return kept, source
