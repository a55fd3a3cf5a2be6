"""Each list of names has one home (spin/names.py) that the config's checks and the code acting
on a name both read, and the checks import no training, process or backend code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

from conftest import ROOT
from test_imports import import_graph

from spin import names
from spin.config import Config
from spin.losses import LOSSES
from spin.stages.opponents import OPPONENTS
from spin.validation import ALLOWED, EVAL_TASK_RANGES, RANGES


def test_every_loss_and_opponent_named_is_implemented_and_no_other():
    assert set(LOSSES) == set(names.LOSSES)
    assert set(OPPONENTS) == set(names.OPPONENTS)
    assert set(names.LOSS_ALIASES.values()) <= set(names.LOSSES)


def test_validation_allows_exactly_the_names_of_the_lists():
    assert set(ALLOWED["loss.name"]) == {*names.LOSSES, *names.LOSS_ALIASES}
    assert set(ALLOWED["trainer.optimizer"]) == set(names.OPTIMIZERS)
    assert ALLOWED["opponent.name"] == names.OPPONENTS


def numeric_keys(schema: type, prefix: str = "") -> set[str]:
    """Every int or float setting of the schema (None allowed or not), by its full key."""
    keys = set()
    for f in dataclasses.fields(schema):
        hint = typing.get_type_hints(schema)[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= numeric_keys(hint, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is list:
            continue  # data.difficulty: checked as a list of step counts
        elif set(typing.get_args(hint) or (hint,)) - {type(None)} <= {int, float}:
            keys.add(f"{prefix}{f.name}")
    return keys


def test_every_number_of_the_schema_has_a_range():
    """A new number cannot skip its finiteness and range check."""
    from spin.config import EvalTaskConfig

    assert numeric_keys(Config) == set(RANGES)
    assert numeric_keys(EvalTaskConfig) == set(EVAL_TASK_RANGES)


def test_the_config_checks_import_no_training_process_or_backend_code():
    graph = import_graph()
    for module in ("spin.config", "spin.validation"):
        assert graph[module] <= {"spin.config", "spin.errors", "spin.names"}, graph[module]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, spin.validation; print(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"torch", "transformers", "spin.distributed", "spin.losses", "spin.trainer"}
    assert not heavy & set(loaded)
