"""A user's own evaluation set: their JSONL fields mapped onto an embedded task's schema.

Every row is checked before anything is scored, so a malformed file fails with the file,
line and field instead of deep inside lm-eval, and the converted rows are written beside the
scores (what was scored stays inspectable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.errors import EvalConfigError


def _field(row: dict, name: str, where: str) -> Any:
    if name not in row:
        raise EvalConfigError(f"{where}: no field {name!r} (the row has {sorted(row)})")
    return row[name]


def _text(row: dict, name: str, where: str) -> str:
    value = _field(row, name, where)
    if not isinstance(value, str) or not value.strip():
        raise EvalConfigError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    return value


def _gsm_row(row: dict, fields: dict[str, str], where: str) -> dict:
    answer = _text(row, fields["answer"], where)
    # A bare final answer ("42") becomes the "#### 42" line the exact match reads.
    if "####" not in answer:
        answer = f"#### {answer.strip()}"
    return {"question": _text(row, fields["question"], where), "answer": answer}


def _mc2_row(row: dict, fields: dict[str, str], where: str) -> dict:
    choices = _field(row, fields["choices"], where)
    labels = _field(row, fields["labels"], where)
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise EvalConfigError(f"{where}: field {fields['choices']!r} must be a list of strings")
    if not isinstance(labels, list) or any(label not in (0, 1) for label in labels):
        raise EvalConfigError(f"{where}: field {fields['labels']!r} must be a list of 0/1 labels")
    if len(labels) != len(choices) or 1 not in labels:
        raise EvalConfigError(
            f"{where}: {fields['labels']!r} needs one label per choice ({len(choices)}) and at "
            "least one 1 (a true answer)"
        )
    return {
        "question": _text(row, fields["question"], where),
        "mc2_targets": {"choices": choices, "labels": labels},
    }


CONVERTERS = {"arith_gsm": _gsm_row, "arith_mc2": _mc2_row}


def convert(path: Path, template: str, fields: dict[str, str]) -> list[dict]:
    """The rows of ``path`` in ``template``'s schema."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalConfigError(f"{where}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise EvalConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
        rows.append(CONVERTERS[template](row, fields, where))
    if not rows:
        raise EvalConfigError(f"{path}: no rows to score")
    return rows


def write_converted(
    files: dict[str, Path], template: str, fields: dict[str, str], out_dir: Path
) -> dict[str, Path]:
    """Convert each split's file into ``out_dir``; the files lm-eval then reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    converted = {}
    for split, path in files.items():
        target = out_dir / f"{split}.jsonl"
        rows = convert(path, template, fields)
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        converted[split] = target
    return converted
