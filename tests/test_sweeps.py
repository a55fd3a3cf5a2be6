"""Sweep presets (sweeps/*.yaml): each composes, and runs end to end on the tiny model through
the one-command runner, which also writes the report. The default run calls sweep.py's and
train.py's main() in this process; the slow run starts them as a user does."""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from conftest import ROOT, entry_module, run_in_process, train_in_process
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from spin.validation import validate

PRESETS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
# Presets whose every job, cut to iteration 0 on the tiny model, still takes minutes (the exact
# world's 44 jobs train SFT models of thousands of pairs): their composition is checked below,
# their jobs and report by tests/test_exact_world.py, and their whole run under ``-m slow``.
LONG_PRESETS = ("exact_world",)
# Shrinks every job to seconds; the preset's own swept keys stay as they are.
TINY = ("experiment=tiny", "eval.limit=2")
# train.py's own configs, which every preset extends (sweep.py passes --config-dir instead).
CONF_SEARCHPATH = f"hydra.searchpath=[file://{ROOT / 'conf'}]"


def sweep_grids(name: str) -> list[dict[str, list[str]]]:
    """The preset's grids: its ``hydra.sweeper.params``, or each of its ``parts``."""
    preset = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
    grids = preset.get("parts") or [preset["hydra"]["sweeper"]["params"]]
    return [{key: str(value).split(",") for key, value in grid.items()} for grid in grids]


def compose_job(name: str, overrides: list[str]):
    """A job of preset ``name``: a Hydra sweep config extends train.py's config; the parts
    of a preset of ``parts`` are train.py overrides."""
    if "parts" in yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text()):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        return compose(name, overrides=[*overrides, CONF_SEARCHPATH])


def test_the_issue_presets_exist():
    assert {
        "paper_table",
        "beta",
        "loss",
        "opponent",
        "data_size",
        "epochs_vs_iterations",
        "smol_arith",
        "variants",
    } <= set(PRESETS)


def contains(actual, expected) -> bool:
    """Every setting in ``expected`` (nested) has the same value in ``actual``."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(actual[k], v) for k, v in expected.items()
        )
    return actual == expected


def without(settings: dict, keys: list[str]) -> dict:
    """``settings`` less the dotted ``keys`` (nested)."""
    out = {}
    for name, value in settings.items():
        inner = [k.split(".", 1)[1] for k in keys if k.startswith(f"{name}.")]
        if name in keys:
            continue
        out[name] = without(value, inner) if isinstance(value, dict) and inner else value
    return out


def group_settings(key: str, value: str) -> tuple[dict, bool] | None:
    """The settings of config group option ``key=value`` and whether they are global (an
    experiment), or None when ``key`` is no group."""
    group_file = ROOT / "conf" / key / f"{value}.yaml"
    if not group_file.is_file():
        return None
    text = group_file.read_text()
    settings = {k: v for k, v in yaml.safe_load(text).items() if k != "defaults"}
    return settings, "@package _global_" in text


def dotted(settings: dict, prefix: str = "") -> list[str]:
    """Every leaf key of ``settings``, dotted."""
    keys = []
    for name, value in settings.items():
        full = f"{prefix}{name}"
        keys += dotted(value, f"{full}.") if isinstance(value, dict) and value else [full]
    return keys


def set_elsewhere(key: str, others: dict[str, str]) -> list[str]:
    """The dotted keys a job's other overrides set: a plain key itself, a group option every
    key of its file (an experiment's body is applied after the groups it overrides)."""
    keys = []
    for other, value in others.items():
        found = group_settings(other, value)
        if found is None:
            keys.append(other)
        else:
            settings, is_global = found
            keys += dotted(settings, "" if is_global else f"{other}.")
    return [k.removeprefix(f"{key}.") for k in keys]


def assert_applied(cfg, key: str, value: str, others: dict[str, str] | None = None) -> None:
    """The composed job holds what the swept override asked for: the value, or for a config
    group every setting of the chosen option's file but those the job's ``others`` (its
    other overrides, a preset part's) set themselves."""
    found = group_settings(key, value)
    if found is None:
        assert OmegaConf.select(cfg, key) == yaml.safe_load(value), key
        return
    expected, is_global = found
    node = cfg if is_global else cfg[key]
    expected = without(expected, set_elsewhere(key, others or {}))
    assert contains(OmegaConf.to_container(node), expected), (key, value)


@pytest.mark.parametrize("name", PRESETS)
def test_every_job_of_a_preset_composes_and_validates(name):
    for params in sweep_grids(name):
        assert params, f"sweeps/{name}.yaml sweeps nothing"
        for values in itertools.product(*params.values()):
            overrides = [f"{k}={v}" for k, v in zip(params, values, strict=True)]
            cfg = compose_job(name, overrides)
            validate(cfg)
            chosen = dict(zip(params, values, strict=True))
            for key, value in chosen.items():
                assert_applied(cfg, key, value, {k: v for k, v in chosen.items() if k != key})


def run_sweep(
    name: str, root: Path, *overrides: str, in_process: bool = False
) -> subprocess.CompletedProcess:
    """``sweep.py <name>`` on the tiny model under ``root``, tagged ``t``: in a subprocess, or
    with ``in_process`` its main() in this process, the ``train.py -m`` runs it starts too."""
    args = [name, *TINY, f"paths.root={root}", "--tag", "t", *overrides]
    if in_process:
        with mock.patch.object(entry_module("sweep.py"), "run_train", train_here):
            return run_in_process("sweep.py", *args, check=False)
    return subprocess.run(
        [sys.executable, str(ROOT / "sweep.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"},
    )


def train_here(arguments: list[str]) -> int:
    """sweep.py's ``train.py -m <arguments>``, run in this process; what it printed is
    passed on to sweep.py's output, as the subprocess's would be."""
    print("Running: train.py -m", *arguments, flush=True)
    proc = train_in_process("-m", *arguments, check=False)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def check_preset_run(name: str, root: Path, *overrides: str, in_process: bool = False) -> None:
    proc = run_sweep(name, root, *overrides, in_process=in_process)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    directory = root / "sweeps" / name / "t"
    reports = list(directory.rglob("report.json"))
    given = [o.split("=")[0] for o in (*TINY, *overrides)]
    expected = sum(
        math.prod(len(v) for k, v in grid.items() if k not in given) for grid in sweep_grids(name)
    )
    assert len(reports) == expected
    table = (directory / "report" / "table.md").read_text()
    assert "| SFT |" in table
    assert (directory / "report" / "scores_vs_iteration.png").stat().st_size > 0


@pytest.mark.parametrize("name", [p for p in PRESETS if p not in LONG_PRESETS])
def test_preset_runs_on_the_tiny_model_and_reports(name, tmp_path):
    """Every job of the preset, cut to iteration 0 to keep the default run short."""
    check_preset_run(name, tmp_path, "iter=0", in_process=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_whole_preset_runs_on_the_tiny_model_and_reports(name, tmp_path):
    check_preset_run(name, tmp_path)


def test_a_preset_of_parts_records_what_its_parts_vary_as_swept():
    spec = importlib.util.spec_from_file_location("sweep_entry", ROOT / "sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    parts = [{"baseline": "sft_more,dpo"}, {"loss": "sigmoid,rpo", "seed": "1", "iter": "2"}]
    varied = sweep.varied_keys(parts)
    assert varied == {"baseline", "loss", "seed", "iter"}
    # A single value of a varied key is a sweep of one value; the command line wins.
    assert sweep.part_overrides(parts[1], varied, ["iter=0"]) == [
        "loss=sigmoid,rpo",
        "seed=choice(1)",
    ]
