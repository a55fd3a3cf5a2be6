"""released.py: the authors' released models scored beside the paper's table, run on local
stand-ins (tiny models) and leaderboard fixtures, and stopped up front when a model is not
at hand."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from statistics import fmean

import huggingface_hub
import pytest
from conftest import ROOT, on_fixtures, run_entry
from hydra import compose, initialize_config_dir

from spin.models import build_tiny
from spin.released import dry_run, entries, provenance_notes
from spin.reporting.paper import Measured, comparison_markdown, load_paper

ROWS = ["sft", "spin_iter0", "spin_iter1", "spin_iter2", "spin_iter3", "dpo"]
# Two leaderboard tasks on their fixtures, a couple of documents each: one multiple-choice,
# one generative.
LEADERBOARD = [
    "eval.tasks=[arc_challenge,gsm8k]",
    "eval.limit=2",
    "eval.max_new_tokens=4",
    *on_fixtures("arc_challenge", "gsm8k"),
]


def released_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("released", overrides=list(overrides))


def test_the_default_models_are_the_papers_rows():
    cfg = released_config()
    chosen = {e.row: (e.path, e.revision) for e in entries(cfg)}
    pinned = "ac6e600eefcce74f5e8bae1035d4f66019e93190"
    assert chosen == {
        "sft": ("alignment-handbook/zephyr-7b-sft-full", pinned),
        **{f"spin_iter{t}": (f"UCLA-AGI/zephyr-7b-sft-full-SPIN-iter{t}", None) for t in range(4)},
        "dpo": ("alignment-handbook/zephyr-7b-dpo-full", None),
    }
    assert cfg.eval.name == "leaderboard_v040"  # scored as the paper was, as paper_zephyr is


def test_the_dpo_row_read_from_the_hubs_main_branch_is_flagged_under_the_table():
    (note,) = provenance_notes(entries(released_config()))
    assert note.startswith("DPO: alignment-handbook/zephyr-7b-dpo-full is read from the hub's")
    assert "f0ffa0d" in note and "may be a retrain" in note
    assert "released.models.dpo.revision=<commit>" in note
    assert provenance_notes(entries(released_config("released.models.dpo.revision=abc"))) == []
    measured = [Measured("dpo", "alignment-handbook/zephyr-7b-dpo-full", {})]
    table = comparison_markdown(measured, [note])
    assert table.endswith(f"\n\n{note}\n")


def test_dry_run_lists_the_models_and_the_scoring_cost(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    text = dry_run(released_config("dry_run=true"))
    for entry in entries(released_config()):
        assert f"{entry.row:<11} {entry.name}  [CANNOT be loaded" in text
    assert "per model: 28,659 docs" in text  # the six leaderboard tasks' documents
    assert "Time for all 6 models" in text and "a100" in text


def test_offline_it_stops_before_any_work_naming_the_missing_models(tmp_path):
    stand_in = tmp_path / "sft"
    for part in build_tiny():
        part.save_pretrained(stand_in)
    root = tmp_path / "outputs"
    proc = run_entry(
        "released.py",
        f"released.models.sft.path={stand_in}",
        "logger=none",
        f"paths.root={root}",
        check=False,
        env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )
    message = proc.stdout + proc.stderr
    assert proc.returncode == 2, message
    assert "5 of the 6 models cannot be loaded here" in message
    for t in range(4):
        assert f"hf download UCLA-AGI/zephyr-7b-sft-full-SPIN-iter{t}`" in message
    assert "hf download alignment-handbook/zephyr-7b-dpo-full`" in message
    assert "released.models.sft" not in message
    assert not (root / "artifacts").exists()


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory) -> tuple[Path, str]:
    """released.py on six tiny stand-in models, one per row, each in its own directory."""
    tmp = tmp_path_factory.mktemp("released")
    paths = []
    for seed, row in enumerate(ROWS):
        for part in build_tiny(seed=seed):
            part.save_pretrained(tmp / row)
        paths.append(f"released.models.{row}.path={tmp / row}")
    proc = run_entry(
        "released.py",
        "model=tiny",
        *paths,
        "released.models.sft.revision=null",
        *LEADERBOARD,
        "logger=none",
        f"paths.root={tmp / 'outputs'}",
        env={"HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp / "datasets")},
    )
    return next((tmp / "outputs" / "runs").glob("released/*")), proc.stdout


def test_stand_ins_are_tabulated_beside_the_paper_with_differences(stand_in_run):
    job, stdout = stand_in_run
    records = list(csv.DictReader(io.StringIO((job / "table.csv").read_text())))
    cells = {(r["row"], r["task"]): r for r in records}
    paper = load_paper()
    assert [r["row"] for r in records if r["task"] == "average"] == ROWS
    scored = ("arc_challenge", "gsm8k")
    for row in ROWS:
        for task, reported in paper[row].items():
            record = cells[row, task]
            assert Path(record["model"]).name == row
            if task == "average":  # over the two tasks scored, on both sides
                reported = fmean(paper[row][t] for t in scored)
                measured = fmean(float(cells[row, t]["measured"]) for t in scored)
                assert float(record["measured"]) == pytest.approx(measured)
            assert float(record["paper"]) == pytest.approx(reported)
            if task in (*scored, "average"):
                difference = float(record["measured"]) - float(record["paper"])
                assert float(record["difference"]) == pytest.approx(difference)
            else:
                assert record["measured"] == record["difference"] == ""
    table = (job / "table.md").read_text()
    assert table in stdout
    assert table.count("| difference |") == len(ROWS)
    assert "| SPIN iteration 2: " in table and "| DPO: " in table
    assert "no revision pinned" not in table  # every model here is a local directory


def test_each_stand_in_is_scored_under_its_own_key(stand_in_run):
    job, stdout = stand_in_run
    listing = stdout.split("\nScored:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    scored = [line for line in listing if "(local directory; key " in line]
    assert len(scored) == len(ROWS)
    assert len({line.rsplit("key ", 1)[1] for line in scored}) == len(ROWS)
    results = list((job.parents[2] / "artifacts" / "eval").glob("*/results.json"))
    assert len(results) == len(ROWS)
