"""Paired bootstrap intervals of changes against SFT, on hand-written rows with per-document
scores: 128 exact-match documents per task, as in the small-scale comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spin.errors import ReportError
from spin.reporting import Row, collect_rows, write_report
from spin.reporting.significance import paired_changes

N = 128
SFT_SOLVED = set(range(0, N, 4))  # 32 of 128: 25%


def solved(indices: set[int]) -> list[float]:
    return [1.0 if i in indices else 0.0 for i in range(N)]


def mean_score(values: list[float] | dict[str, list[float]]) -> float:
    """A task's score: the mean of its items, or for a group the mean of its leaves' means."""
    if isinstance(values, dict):
        return sum(map(mean_score, values.values())) / len(values)
    return sum(values) / len(values)


def row(label: str, key: str, items: dict, reference: str | None = "sft") -> Row:
    """A row scored on the tasks of ``items``, its scores the means of its items."""
    scores = {k: mean_score(v) for k, v in items.items()}
    scores["average"] = sum(scores.values()) / len(scores)
    kind = "sft" if reference is None else "spin"
    return Row(
        label, kind, None if reference is None else 0, key, scores, items=items, reference=reference
    )


SFT = row(
    "SFT", "sft", {"a/exact_match": solved(SFT_SOLVED), "b/exact_match": solved(SFT_SOLVED)}, None
)
# Every SFT item plus 10 more, on task a; task b exactly as SFT.
TEN_MORE = SFT_SOLVED | set(range(1, 41, 4))
BETTER = row(
    "better", "better", {"a/exact_match": solved(TEN_MORE), "b/exact_match": solved(SFT_SOLVED)}
)
# Task a: 8 SFT items lost and 8 others gained; task b: 10 SFT items lost.
SWAPPED = (SFT_SOLVED - set(range(0, 32, 4))) | set(range(1, 33, 4))
NOISY = row(
    "noisy",
    "noisy",
    {"a/exact_match": solved(SWAPPED), "b/exact_match": solved(SFT_SOLVED - set(range(0, 40, 4)))},
)


def test_ten_more_solved_items_exclude_zero_and_identical_items_give_zero() -> None:
    changes = paired_changes(BETTER, SFT)
    a = changes["a/exact_match"]
    assert a.change == pytest.approx(100 * 10 / N)
    assert 0 < a.low < a.change < a.high
    assert a.excludes_zero
    b = changes["b/exact_match"]
    assert (b.change, b.low, b.high) == (0.0, 0.0, 0.0) and not b.excludes_zero
    # The average of a (+7.81) and b (+0): b never moves, so it halves a's interval.
    average = changes["average"]
    assert average.change == pytest.approx(a.change / 2)
    assert (average.low, average.high) == pytest.approx((a.low / 2, a.high / 2))


def test_a_swap_of_items_includes_zero_and_a_loss_is_negative() -> None:
    changes = paired_changes(NOISY, SFT)
    a = changes["a/exact_match"]
    assert a.change == 0.0 and a.low < 0 < a.high and not a.excludes_zero
    b = changes["b/exact_match"]
    assert b.change == pytest.approx(-100 * 10 / N) and b.high < 0 and b.excludes_zero


def test_intervals_are_seeded() -> None:
    assert paired_changes(NOISY, SFT) == paired_changes(NOISY, SFT)


def test_different_document_counts_give_no_interval_and_say_why() -> None:
    short = row(
        "short",
        "short",
        {"a/exact_match": solved(SFT_SOLVED)[:100], "b/exact_match": solved(SFT_SOLVED)},
    )
    changes = paired_changes(short, SFT)
    assert changes["a/exact_match"].low is None
    assert changes["a/exact_match"].reason == "100 documents against the reference's 128"
    assert changes["b/exact_match"].low == 0.0
    assert changes["average"].low is None
    assert changes["average"].reason == "no interval for a/exact_match"


def test_a_group_is_resampled_per_leaf() -> None:
    sft = row("SFT", "sft", {"g/acc": {"x": solved(SFT_SOLVED), "y": solved(SFT_SOLVED)}}, None)
    more = row("more", "more", {"g/acc": {"x": solved(TEN_MORE), "y": solved(SFT_SOLVED)}})
    change = paired_changes(more, sft)["g/acc"]
    assert change.change == pytest.approx(100 * 10 / N / 2) and change.excludes_zero
    other = row("other", "other", {"g/acc": {"x": solved(TEN_MORE), "z": solved(SFT_SOLVED)}})
    assert (
        paired_changes(other, sft)["g/acc"].reason == "leaf tasks differ (y, z only in one model)"
    )


def test_rows_without_items_have_no_intervals() -> None:
    old = Row("old", "spin", 0, "old", {"a/exact_match": 0.3, "average": 0.3}, reference="sft")
    assert paired_changes(old, SFT) == {}


def report_json(path: Path, rows: list[Row]) -> None:
    """A job report holding ``rows`` in the report.json contract."""
    path.mkdir(parents=True)
    contract = [
        {
            "label": r.label,
            "kind": r.kind,
            "iteration": r.iteration,
            "model_key": r.model_key,
            "scores": r.scores,
            "stderr": {k: 0.03 for k in r.items},
            "items": r.items,
            "costs": {},
            "curves": [],
        }
        for r in rows
    ]
    (path / "report.json").write_text(json.dumps({"settings": {"model": "tiny"}, "rows": contract}))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    jobs = tmp_path_factory.mktemp("jobs")
    report_json(jobs / "job", [SFT, BETTER, NOISY])
    out = jobs / "report"
    write_report(collect_rows([jobs / "job"]), out)
    return out


def test_changes_md_lists_each_change_with_its_interval(written: Path) -> None:
    text = (written / "changes.md").read_text()
    lines = text.splitlines()
    better = next(line for line in lines if line.startswith("| better"))
    cells = [c.strip() for c in better.strip("|").split("|")]
    assert cells[1].startswith("+7.81 [+") and cells[1].endswith("]*")
    assert cells[2] == "+0.00 [+0.00, +0.00]"
    noisy = next(line for line in lines if line.startswith("| noisy"))
    assert [c.strip() for c in noisy.strip("|").split("|")][1].startswith("+0.00 [-")
    assert "| SFT" not in text  # the reference itself has no change


def test_tables_mark_changes_whose_interval_excludes_zero(written: Path) -> None:
    md = (written / "table.md").read_text()
    assert "| better | 32.81 (+7.81)* | 25.00 (+0.00) |" in md
    assert "| noisy | 25.00 (+0.00) | 17.19 (-7.81)* |" in md
    assert md.splitlines()[-1].startswith("`*`: the change's paired 95% bootstrap interval")
    with open(written / "table.csv") as f:
        records = {r["model"]: r for r in csv.DictReader(f)}
    assert records["better"]["a/exact_match significant"] == "yes"
    assert records["better"]["b/exact_match significant"] == "no"
    assert records["SFT"]["a/exact_match significant"] == ""
    tex = (written / "table.tex").read_text()
    assert r"better & 32.81 (+7.81)$^{*}$ & 25.00 (+0.00) &" in tex
    with open(written / "changes.csv") as f:
        changes = {r["model"]: r for r in csv.DictReader(f)}
    assert list(changes) == ["better", "noisy"]
    assert float(changes["better"]["a/exact_match change"]) == pytest.approx(100 * 10 / N)
    assert float(changes["better"]["a/exact_match low"]) > 0


def test_old_reports_without_items_write_no_intervals(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "reports" / "beta_sweep"
    write_report(collect_rows([fixture]), tmp_path)
    assert "No intervals" in (tmp_path / "changes.md").read_text()
    assert "*" not in (tmp_path / "table.md").read_text()
    assert (tmp_path / "changes.csv").read_text().startswith("model,kind,iteration,settings,")


def test_malformed_items_name_file_and_field(tmp_path: Path) -> None:
    report_json(tmp_path / "job", [SFT])
    path = tmp_path / "job" / "report.json"
    report = json.loads(path.read_text())
    report["rows"][0]["items"]["a/exact_match"][3] = "1"
    path.write_text(json.dumps(report))
    with pytest.raises(ReportError, match=r"rows\[0\]\.items\['a/exact_match'\]\[3\]: expected a"):
        collect_rows([path])
