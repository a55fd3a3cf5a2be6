"""The audit of experiment=paper_zephyr (spin/planning/paper_fidelity.yaml): the preset composes
to every value the table states, the committed table is the rendered audit, and the dry run
names what still differs."""

from __future__ import annotations

import pytest
from conftest import compose_config, train_in_process

from spin.planning.fidelity import DOC_FILE, departures, load_audit, render

NAME, ROWS = load_audit()


@pytest.mark.parametrize("row", ROWS, ids=[row.setting for row in ROWS])
def test_the_preset_composes_to_the_audited_values(row):
    cfg = compose_config(f"experiment={NAME}")
    assert departures(cfg, [row]) == []


def test_the_table_covers_what_a_reproduction_depends_on():
    keys = {key for row in ROWS for key in row.preset}
    for key in (
        "model.revision",
        "data.path",
        "generation.prompt_format",
        "generation.system_prompt",
        "generation.do_sample",
        "model.truncation",
        "trainer.optimizer",
        "trainer.lr",
        "schedule.3.beta",
        "trainer.epochs",
        "trainer.batch_size",
        "trainer.warmup_ratio",
        "trainer.precision",
        "spin.mix_previous",
        "baseline.beta",
        "eval.tasks",
    ):
        assert key in keys, f"{key} is not audited"
    assert all(row.paper and row.official for row in ROWS)
    assert all(row.why for row in ROWS if row.status != "same")


def test_the_committed_table_is_the_rendered_audit():
    assert DOC_FILE.read_text() == render(), (
        "docs/paper_fidelity.md is stale: python -m spin.planning.fidelity --write"
    )


def test_an_override_away_from_the_audit_is_named():
    cfg = compose_config(f"experiment={NAME}", "generation=official_hf", "trainer.epochs=6")
    moved = {key for _, key, _, _ in departures(cfg, ROWS)}
    assert moved == {"generation.prompt_format", "generation.train_prompt_format", "trainer.epochs"}


def test_dry_run_prints_the_remaining_differences(tmp_path):
    proc = train_in_process(
        f"experiment={NAME}", "dry_run=true", "trainer.epochs=6", f"paths.root={tmp_path}"
    )
    out = proc.stdout
    assert "Differences from the paper's setup" in out
    for row in ROWS:
        assert (row.status == "different") == (f"  - {row.setting}: {row.why}" in out)
    assert "trainer.epochs=6.0 here, 2 in the audited preset" in out
