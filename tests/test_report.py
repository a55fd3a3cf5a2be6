"""report.py on hand-written job reports: a sweep of two jobs (loss.beta=0.1 with DPO and
SPIN + DPO, loss.beta=0.05 with SFT + 1 epoch), both holding the same SFT model and SPIN
iterations 0..2. Expected numbers are worked out by hand from the fixture files."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from spin.reporting import Row, collect_rows
from spin.reporting.paper import with_paper

ROOT = Path(__file__).resolve().parents[1]
# report.py is a script beside train.py, not part of the package: load it from its file.
_spec = importlib.util.spec_from_file_location("report_cli", ROOT / "report.py")
report_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_cli)
main = report_cli.main
SWEEP = ROOT / "tests" / "fixtures" / "reports" / "beta_sweep"
ORDER = [
    "SFT",
    "SFT + 1 epoch",
    "DPO (beta=0.1)",
    "SPIN iteration 0 (beta=0.05)",
    "SPIN iteration 1 (beta=0.05)",
    "SPIN iteration 2 (beta=0.05)",
    "SPIN iteration 0 (beta=0.1)",
    "SPIN iteration 1 (beta=0.1)",
    "SPIN iteration 2 (beta=0.1)",
    "SPIN iteration 2 + DPO (beta=0.1)",
]


def markdown_cells(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The header and, per model, the cells of a Markdown table (up to the note under it)."""
    table = path.read_text().split("\n\n")[0]
    lines = [line.strip("|").split("|") for line in table.splitlines()]
    header = [cell.strip() for cell in lines[0]]
    rows = {}
    for line in lines[2:]:
        name, *cells = (cell.strip() for cell in line)
        assert name not in rows, f"{name} listed twice"
        rows[name] = cells
    return header, rows


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep copied to a scratch folder and reported with the default --out; what the
    command printed is kept in ``stdout.txt`` beside the report."""
    sweep = tmp_path_factory.mktemp("sweep") / "beta_sweep"
    shutil.copytree(SWEEP, sweep)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(sweep)]) == 0
    (sweep / "stdout.txt").write_text(printed.getvalue())
    return sweep / "report"


@pytest.fixture(scope="module")
def paper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep reported with the paper's rows and logged to an offline W&B run."""
    out = tmp_path_factory.mktemp("paper")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        assert main([str(SWEEP), "--out", str(out), "--paper", "--wandb"]) == 0
    return out


def test_markdown_scores_and_deltas_against_sft(report_dir: Path) -> None:
    header, rows = markdown_cells(report_dir / "table.md")
    assert header == ["Model", "Arith GSM", "Arith MC2", "Average"]
    assert rows["SFT"] == ["20.00", "50.00", "35.00"]
    # 21.234% shows as 21.23, 21.23 - 20.00 = +1.23; 50.77 - 50.00 = +0.77; 36.002 - 35.00.
    assert rows["SPIN iteration 0 (beta=0.05)"] == [
        "21.23 (+1.23)",
        "50.77 (+0.77)",
        "36.00 (+1.00)",
    ]
    assert rows["SPIN iteration 1 (beta=0.05)"] == [
        "18.50 (-1.50)",
        "51.00 (+1.00)",
        "34.75 (-0.25)",
    ]
    assert rows["SPIN iteration 2 (beta=0.1)"] == [
        "30.00 (+10.00)",
        "53.00 (+3.00)",
        "41.50 (+6.50)",
    ]
    assert rows["SFT + 1 epoch"] == ["21.00 (+1.00)", "49.00 (-1.00)", "35.00 (+0.00)"]


def test_one_row_per_model_in_table_order_with_setting_suffixes(report_dir: Path) -> None:
    with open(report_dir / "table.csv") as f:
        records = list(csv.DictReader(f))
    assert [r["model"] for r in records] == ORDER
    assert [r["settings"] for r in records[:3]] == ["", "", "beta=0.1"]
    assert [(r["kind"], r["iteration"]) for r in records[3:6]] == [
        ("spin", "0"),
        ("spin", "1"),
        ("spin", "2"),
    ]


def test_csv_keeps_full_precision_in_percent(report_dir: Path) -> None:
    with open(report_dir / "table.csv") as f:
        records = {r["model"]: r for r in csv.DictReader(f)}
    spin0 = records["SPIN iteration 0 (beta=0.05)"]
    assert float(spin0["arith_gsm/exact_match"]) == pytest.approx(21.234)
    assert float(spin0["arith_gsm/exact_match delta"]) == pytest.approx(1.234)
    assert float(spin0["average delta"]) == pytest.approx(36.002 - 35.0)
    assert records["SFT"]["average"] == "35.0"
    assert records["SFT"]["average delta"] == ""


def test_latex_is_a_booktabs_tabular_with_one_line_per_model(report_dir: Path) -> None:
    tex = (report_dir / "table.tex").read_text()
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{lrrr}"
    assert {r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"} <= set(lines)
    table_lines = [line for line in lines if line.endswith(r"\\")]
    assert len(table_lines) == 1 + len(ORDER)
    assert (
        r"SPIN iteration 0 (beta=0.05) & 21.23 (+1.23) & 50.77 (+0.77) & 36.00 (+1.00) \\" in lines
    )


def test_costs_count_a_shared_model_once(report_dir: Path) -> None:
    with open(report_dir / "costs.csv") as f:
        records = {r["model"]: r for r in csv.DictReader(f)}
    assert list(records) == [*ORDER, "Total"]
    assert records["SFT"] == {
        "model": "SFT",
        "generation_s": "",
        "reference_s": "",
        "train_s": "",
        "eval_s": "10.0",
        "tokens_generated": "",
        "tokens_trained": "",
        "generation_peak_gb": "",
        "reference_peak_gb": "",
        "train_peak_gb": "",
        "eval_peak_gb": "",
    }
    total = records["Total"]
    # Sums over the ten rows of the fixtures; the SFT model's 10 s of evaluation appears in
    # both jobs but is one model, so the evaluations add up to 10 x 10 s.
    assert float(total["generation_s"]) == pytest.approx(5 + 5 + 5 + 5 + 5.5 + 6)
    assert float(total["reference_s"]) == pytest.approx(2 * 8)
    assert float(total["train_s"]) == pytest.approx(30 + 20 + 3 * 20 + 20 + 21 + 22 + 20)
    assert float(total["eval_s"]) == pytest.approx(10 * 10)
    assert int(total["tokens_generated"]) == 4 * 1000 + 1100 + 1200
    assert int(total["tokens_trained"]) == 4000 + 8 * 2000
    # Peaks do not add up: the total of a peak column is the largest peak of a stage.
    assert float(total["train_peak_gb"]) == pytest.approx(2.0)
    assert float(records["SPIN iteration 1 (beta=0.1)"]["train_peak_gb"]) == pytest.approx(1.75)
    _, md = markdown_cells(report_dir / "costs.md")
    assert md["Total"] == ["31.5", "16.0", "193.0", "100.0", "6300", "20000", "", "", "2.00", ""]


def test_plots_are_written(report_dir: Path) -> None:
    for name in ("scores_vs_iteration.png", "training_curves.png"):
        data = (report_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name


def test_prints_table_and_written_paths(report_dir: Path) -> None:
    printed = (report_dir.parent / "stdout.txt").read_text()
    assert printed.startswith((report_dir / "table.md").read_text())
    names = ("table.md", "table.csv", "table.tex", "costs.md", "costs.csv")
    for name in (*names, "changes.md", "changes.csv"):
        assert f"  {report_dir / name}\n" in printed


def test_one_job_alone_needs_no_suffix() -> None:
    rows = collect_rows([SWEEP / "beta0.1" / "report.json"])
    assert [row.name for row in rows] == [
        "SFT",
        "DPO",
        "SPIN iteration 0",
        "SPIN iteration 1",
        "SPIN iteration 2",
        "SPIN iteration 2 + DPO",
    ]


def test_paper_rows_with_their_own_deltas(paper_dir: Path) -> None:
    header, rows = markdown_cells(paper_dir / "table.md")
    assert header[1:4] == ["ARC", "TruthfulQA", "Winogrande"]
    assert rows["paper: SFT"][0] == "60.41"
    # SPIN iteration 0 against SFT in the paper: ARC 63.40 - 60.41, GSM8k 35.10 - 26.76.
    assert rows["paper: SPIN iteration 0"][0] == "63.40 (+2.99)"
    assert rows["paper: SPIN iteration 0"][header.index("GSM8k") - 1] == "35.10 (+8.34)"
    assert rows["paper: SPIN iteration 3"][-1] == "63.16 (+5.02)"
    assert rows["SFT"][0] == "-"
    with open(paper_dir / "table.csv") as f:
        records = {r["model"]: r for r in csv.DictReader(f)}
    assert float(records["paper: DPO"]["arc_challenge/acc_norm delta"]) == pytest.approx(3.24)


def test_paper_rows_only_when_asked_or_reproducing_the_paper(report_dir: Path) -> None:
    assert "paper:" not in (report_dir / "table.md").read_text()
    tasks = ["arc_challenge/acc_norm", "truthfulqa_mc2/mc2", "winogrande/acc"]
    tasks += ["gsm8k/exact_match", "hellaswag/acc_norm", "mmlu/acc"]
    zephyr = Row(
        label="SFT",
        kind="sft",
        iteration=None,
        model_key="k",
        scores={**dict.fromkeys(tasks, 0.5), "average": 0.5},
        settings={"model": "zephyr-7b-sft-full"},
    )
    names = [row.name for row in with_paper([zephyr])]
    assert names == ["SFT", "paper: SFT", "paper: DPO"] + [
        f"paper: SPIN iteration {i}" for i in range(4)
    ]
    assert with_paper([replace(zephyr, settings={"model": "tiny"})]) == [
        replace(zephyr, settings={"model": "tiny"})
    ]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (["rows", 2, "model_key"], "rows[2]: missing field 'model_key'"),
        (["settings"], "missing field 'settings'"),
    ],
)
def test_malformed_report_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture, path: list, field: str
) -> None:
    report = json.loads((SWEEP / "beta0.1" / "report.json").read_text())
    parent = report
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    broken = tmp_path / "job" / "report.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps(report))
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and field in err


def test_no_report_found_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "report.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"no report.json found under {tmp_path}" in proc.stderr
    assert not (tmp_path / "report").exists()


def test_wandb_run_holds_table_and_plots(paper_dir: Path) -> None:
    (run,) = (paper_dir / "wandb").glob("offline-run-*")
    (table,) = run.glob("files/media/table/report/table_*.table.json")
    logged = json.loads(table.read_text())
    assert [record[0] for record in logged["data"]][: len(ORDER)] == ORDER
    assert logged["data"][len(ORDER)][0] == "paper: SFT"
    images = sorted(p.name.split("_0_")[0] for p in run.glob("files/media/images/report/*.png"))
    assert images == ["scores_vs_iteration", "training_curves"]
