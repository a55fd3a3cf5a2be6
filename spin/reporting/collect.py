"""Reading job reports and merging their rows into one list of models.

A sweep's jobs share stages: the SFT start model is in every job, and ``iter=2`` holds the
models of ``iter=0`` and ``iter=1`` too. A comparison table wants each model once, so rows are
merged by ``model_key`` (the content hash of the model artifact); rows that differ only in a
swept setting (``loss.beta=0.05,0.1``) get a suffix naming that setting so a reader can tell
them apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spin.errors import ReportError

REPORT_FILE = "report.json"
KINDS = ("sft", "sft_more", "dpo", "spin", "spin_dpo")
COST_FIELDS = (
    "generation_s",
    "reference_s",
    "train_s",
    "eval_s",
    "tokens_generated",
    "tokens_trained",
    "generation_peak_gb",
    "reference_peak_gb",
    "train_peak_gb",
    "eval_peak_gb",
)
# Settings that select which rows a job reports rather than how its models are trained, so
# they never distinguish two models.
NOT_DISTINGUISHING = frozenset({"baseline", "iter"})
# Kinds whose training depends on the swept settings; SFT rows are named by their label alone
# unless two different SFT models would otherwise share a name.
SETTING_DEPENDENT = frozenset({"dpo", "spin", "spin_dpo"})


@dataclass(frozen=True)
class Row:
    """One model in the comparison table, with what it scored and what it cost."""

    label: str
    kind: str
    iteration: int | None
    model_key: str
    scores: dict[str, float]
    costs: dict[str, float | None] = field(default_factory=dict)
    curves: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    suffix: str = ""
    reference: str | None = None
    """``model_key`` of the SFT row this row's deltas are taken against; None for that row."""
    source: str = "reproduction"
    items: dict[str, Any] = field(default_factory=dict)
    """``<task>/<metric>`` -> each document's value in ``doc_id`` order (for a group, a list
    per leaf task); empty for reports written before these were recorded."""
    stderr: dict[str, float | None] = field(default_factory=dict)
    seeds: tuple[Row, ...] = ()
    """The rows of each seed when this row pools jobs that differ only by ``seed``
    (spin/reporting/seeds.py); empty otherwise."""

    @property
    def name(self) -> str:
        """The label shown in tables and legends."""
        return f"{self.label} ({self.suffix})" if self.suffix else self.label

    @property
    def group(self) -> str:
        """Rows trained under the same settings; plots draw one line per group."""
        return "paper" if self.source == "paper" else self.suffix


def find_reports(paths: Iterable[Path]) -> list[Path]:
    """Every report.json at or below ``paths``, each once, in a stable order."""
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path}: no such file or directory")
        candidates = [path] if path.is_file() else sorted(path.rglob(REPORT_FILE))
        for candidate in candidates:
            found.setdefault(candidate.resolve(), None)
    return list(found)


def _expect(value: Any, types: type | tuple[type, ...], where: str, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, types):
        raise ReportError(f"{where}: expected {what}, got {type(value).__name__} {value!r}")
    return value


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise ReportError(f"{where}: missing field '{key}'")
    return obj[key]


def _check_row(row: Any, where: str) -> None:
    _expect(row, dict, where, "an object")
    _expect(_field(row, "label", where), str, f"{where}.label", "a string")
    kind = _field(row, "kind", where)
    if kind not in KINDS:
        raise ReportError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    iteration = _field(row, "iteration", where)
    if iteration is not None:
        _expect(iteration, int, f"{where}.iteration", "an integer or null")
    _expect(_field(row, "model_key", where), str, f"{where}.model_key", "a string")
    scores = _expect(_field(row, "scores", where), dict, f"{where}.scores", "an object")
    for name, value in scores.items():
        _expect(value, (int, float), f"{where}.scores['{name}']", "a number")
    costs = _expect(_field(row, "costs", where), dict, f"{where}.costs", "an object")
    for name, value in costs.items():
        if value is not None:
            _expect(value, (int, float), f"{where}.costs['{name}']", "a number or null")
    _expect(_field(row, "curves", where), list, f"{where}.curves", "a list")
    _check_items(row.get("items", {}), f"{where}.items")


def _check_items(items: Any, where: str) -> None:
    """``items`` (optional: older reports lack it) maps a score key to per-document numbers,
    or for a group to such a list per leaf task."""
    _expect(items, dict, where, "an object")
    for name, values in items.items():
        lists = values.items() if isinstance(values, dict) else [(None, values)]
        for leaf, documents in lists:
            at = f"{where}['{name}']" + (f"['{leaf}']" if leaf is not None else "")
            _expect(documents, list, at, "a list of numbers (or an object of such lists)")
            for i, value in enumerate(documents):
                _expect(value, (int, float), f"{at}[{i}]", "a number")


def load_report(path: Path) -> dict[str, Any]:
    """A job report, checked for the fields the tables and plots read.

    Errors name the file and the field so a broken job is found without opening every report.
    """
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
    where = str(path)
    _expect(report, dict, where, "a JSON object")
    _expect(_field(report, "settings", where), dict, f"{where}: settings", "an object")
    rows = _expect(_field(report, "rows", where), list, f"{where}: rows", "a list")
    for i, row in enumerate(rows):
        _check_row(row, f"{where}: rows[{i}]")
    return report


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def differing_settings(settings: Sequence[dict[str, Any]]) -> list[str]:
    """Settings whose value is not the same in every job (``baseline`` and ``iter`` aside)."""
    keys = [k for k in dict.fromkeys(k for s in settings for k in s) if k not in NOT_DISTINGUISHING]
    return [k for k in keys if len({_hashable(s.get(k)) for s in settings}) > 1]


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _suffix(jobs: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """The swept settings shared by every job that holds a model.

    A setting whose value varies among those jobs did not shape the model (the same artifact
    came out under each value), so it is left out of the name.
    """
    parts = []
    for key in keys:
        values = {_hashable(job.get(key)) for job in jobs}
        if len(values) == 1:
            parts.append(f"{key}={_format_value(jobs[0].get(key))}")
    return ", ".join(parts)


def _merge_costs(costs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """One cost per field for a model that several jobs report.

    Only the job that built a shared stage pays for it; the others reuse the artifact and
    report it as free or unknown, so the largest known value is the real cost.
    """
    merged: dict[str, float | None] = {}
    for name in COST_FIELDS:
        known = [c[name] for c in costs if c.get(name) is not None]
        merged[name] = max(known) if known else None
    return merged


def _sort_value(value: Any) -> tuple[int, float, str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, _hashable(value))


def _order(rows: list[Row], keys: Sequence[str]) -> list[Row]:
    """SFT, SFT + 1 epoch, DPO, then SPIN iterations per setting group, then SPIN + DPO."""

    def rank(row: Row) -> tuple[Any, ...]:
        group = tuple(_sort_value(row.settings.get(k)) for k in keys)
        return (KINDS.index(row.kind), group, row.iteration if row.iteration is not None else -1)

    return sorted(rows, key=rank)


def merge_rows(reports: Sequence[tuple[Path, dict[str, Any]]]) -> list[Row]:
    """The rows of all ``reports``, one per model, named and ordered for the table."""
    keys = differing_settings([report["settings"] for _, report in reports])
    holders: dict[str, list[int]] = {}
    entries: dict[str, list[dict[str, Any]]] = {}
    for job, (_, report) in enumerate(reports):
        for row in report["rows"]:
            holders.setdefault(row["model_key"], []).append(job)
            entries.setdefault(row["model_key"], []).append(row)
    sft_of_job = {
        job: row["model_key"]
        for job, (_, report) in enumerate(reports)
        for row in report["rows"]
        if row["kind"] == "sft"
    }
    rows = []
    for key, same_model in entries.items():
        first = same_model[0]
        jobs = [reports[j][1]["settings"] for j in holders[key]]
        scores: dict[str, float] = {}
        items: dict[str, Any] = {}
        stderr: dict[str, float | None] = {}
        for entry in same_model:
            scores = {**entry["scores"], **scores}
            items = {**entry.get("items", {}), **items}
            stderr = {**entry.get("stderr", {}), **stderr}
        reference = sft_of_job.get(holders[key][0])
        rows.append(
            Row(
                label=first["label"],
                kind=first["kind"],
                iteration=first["iteration"],
                model_key=key,
                scores=scores,
                costs=_merge_costs([e["costs"] for e in same_model]),
                curves=next((e["curves"] for e in same_model if e["curves"]), []),
                settings=jobs[0],
                suffix=_suffix(jobs, keys),
                reference=None if reference == key else reference,
                items=items,
                stderr=stderr,
            )
        )
    return _order(_drop_needless_suffixes(rows), keys)


def _drop_needless_suffixes(rows: list[Row]) -> list[Row]:
    """SFT-like rows keep a suffix only where two different models would share a label."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.label] = counts.get(row.label, 0) + 1
    return [
        row if row.kind in SETTING_DEPENDENT or counts[row.label] > 1 else replace(row, suffix="")
        for row in rows
    ]


def collect_rows(paths: Iterable[Path]) -> list[Row]:
    """The merged rows of every report.json at or below ``paths``.

    Raises ReportError when none is found or one is malformed.
    """
    paths = list(paths)
    files = find_reports(paths)
    if not files:
        raise ReportError(f"no {REPORT_FILE} found under {', '.join(map(str, paths))}")
    return merge_rows([(f, load_report(f)) for f in files])
