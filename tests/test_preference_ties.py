"""Preference pairs whose chosen equals rejected: dropped by default, kept under
``baseline.preferences.drop_ties=false``, as the alignment-handbook recipe behind the paper's
DPO row (61a11a5) and so ``experiment=paper_zephyr`` keep them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from conftest import compose_config

from spin.config import PreferenceConfig
from spin.data import load_preference_jsonl, load_preferences, load_ultrafeedback

ULTRAFEEDBACK = Path(__file__).parent / "fixtures" / "ultrafeedback"
TIE = {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 4."}


def test_a_tie_is_dropped_by_default_and_kept_on_request(caplog):
    dropped = load_ultrafeedback(str(ULTRAFEEDBACK))
    with caplog.at_level(logging.INFO, logger="spin.data.preferences"):
        kept = load_ultrafeedback(str(ULTRAFEEDBACK), drop_ties=False)
    assert TIE not in dropped and len(dropped) == 4
    assert kept[2] == TIE and [p for p in kept if p != TIE] == dropped  # in file order
    assert "Kept 1 of 5 preference pairs" in caplog.text


def test_the_setting_reaches_every_source_that_can_tie(tmp_path):
    rows = [TIE, {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}]
    mine = tmp_path / "prefs.jsonl"
    mine.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_preference_jsonl(mine) == rows[1:]
    assert load_preference_jsonl(mine, drop_ties=False) == rows
    for source, path, count in (("ultrafeedback", ULTRAFEEDBACK, 5), ("jsonl", mine, 2)):
        kept = PreferenceConfig(source=source, path=str(path), drop_ties=False)
        dropped = PreferenceConfig(source=source, path=str(path))
        assert (len(load_preferences(kept, [])), len(load_preferences(dropped, []))) == (
            count,
            count - 1,
        )


def test_paper_preset_keeps_ties_and_the_default_drops_them():
    assert compose_config().baseline.preferences.drop_ties is True
    assert compose_config("experiment=paper_zephyr").baseline.preferences.drop_ties is False
