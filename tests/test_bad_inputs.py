"""Bad input of every kind stops with exit code 2 and one line naming what is wrong, before
any work, and changes nothing already on disk.

The table runs in-process through what train.py runs before its first work (Hydra's
composition, :func:`spin.job.preflight`, the data's loading) inside the entry shell's
:func:`spin.entry.guarded`, so it stays fast; a handful run as real subprocesses. A
property-based test draws values for every number and name the schema checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import compose_config, run_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spin.data import load_splits
from spin.entry import guarded
from spin.job import preflight
from spin.validation import ALLOWED, RANGES

BASE = ("experiment=tiny", "logger=none")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An outputs root holding an earlier job and an artifact, as a user's root would."""
    root = tmp_path_factory.mktemp("earlier")
    job = root / "runs" / "tiny" / "2026-01-01_00-00-00"
    job.mkdir(parents=True)
    (job / "report.json").write_text('{"rows": []}\n')
    (job / "metrics.jsonl").write_text('{"type": "event", "event": "sweep"}\n')
    artifact = root / "artifacts" / "model" / "0123456789abcdef"
    artifact.mkdir(parents=True)
    (artifact / "spec.json").write_text("{}\n")
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data files a user might get wrong, each wrong in one way."""
    folder = tmp_path_factory.mktemp("data")
    good = {"prompt": "What is 2 + 2?", "response": "4"}
    contents = {
        "malformed": json.dumps(good) + "\n{not json\n",
        "no_prompt": json.dumps({"response": "4"}) + "\n",
        "empty_response": json.dumps({"prompt": "Hi?", "response": "  "}) + "\n",
        "number_prompt": json.dumps({"prompt": 7, "response": "4"}) + "\n",
        "no_messages": json.dumps(good) + "\n",
        "array": json.dumps([good]) + "\n",
        "empty": "",
    }
    paths = {}
    for name, text in contents.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text(text)
    (folder / "no_train_split").mkdir()
    paths["no_train_split"] = folder / "no_train_split"
    paths["a_file"] = folder / "a_file"
    paths["a_file"].write_text("not a folder\n")
    artifacts_file = folder / "artifacts_file"
    artifacts_file.mkdir()
    (artifacts_file / "artifacts").write_text("not a folder\n")
    paths["artifacts_file"] = artifacts_file
    return paths


def start(overrides: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of what ``python train.py <overrides>`` does up to its first work."""

    def body() -> None:
        cfg = compose_config(*BASE, *overrides)
        preflight(cfg, trains=True)
        load_splits(cfg.data)

    capsys.readouterr()
    try:
        guarded("a test job", "", body, composing=True)
    except SystemExit as stop:
        return int(stop.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


# (overrides, what the one line must name). ``{name}`` is a file of the ``files`` fixture;
# ``{root}`` the earlier outputs root.
CASES = [
    # keys, config groups and types
    (["foo=1"], "foo"),
    (["+foo=1"], "foo"),
    (["loss=nope"], "loss/nope"),
    (["model=nope"], "model/nope"),
    (["baseline=nope"], "baseline/nope"),
    (["trainer.lr=abc"], "trainer.lr=abc"),
    (["iter=one"], "iter=one"),
    (["iter=1.5"], "iter=1.5"),
    (["trainer.batch_size=2.5"], "trainer.batch_size=2.5"),
    (["loss.beta=[1,2]"], "loss.beta"),
    (["data.n_train=many"], "data.n_train=many"),
    (["trainer.lr="], "trainer.lr"),
    (["loss.beta=0.1=2"], "loss.beta"),
    # names
    (["logger.mode=onlin"], "logger.mode='onlin'"),
    (["loss.name=squared"], "loss.name='squared'"),
    (["trainer.optimizer=sgd"], "trainer.optimizer='sgd'"),
    (["trainer.precision=fp8"], "trainer.precision='fp8'"),
    (["trainer.distributed=mpi"], "trainer.distributed='mpi'"),
    (["baseline.name=nope"], "baseline.name='nope'"),
    (["baseline.loss=rpo"], "baseline.loss='rpo'"),
    (["opponent.name=nash"], "opponent.name='nash'"),
    (["generation.backend=tgi"], "generation.backend='tgi'"),
    (["model.dtype=int8"], "model.dtype='int8'"),
    (["data.source=csv"], "data.source='csv'"),
    (["lora.quantize=8bit"], "lora.quantize='8bit'"),
    (["model.truncation=middle"], "model.truncation='middle'"),
    (["data.selection=last"], "data.selection='last'"),
    (["model.prompt_overflow=clip"], "model.prompt_overflow='clip'"),
    # numbers: NaN, infinities, ranges
    (["loss.beta=nan"], "loss.beta=nan"),
    (["loss.beta=inf"], "loss.beta=inf"),
    (["loss.beta=-inf"], "loss.beta=-inf"),
    (["loss.beta=0"], "loss.beta=0.0"),
    (["loss.nll_weight=-1"], "loss.nll_weight=-1.0"),
    (["loss.nll_weight=nan"], "loss.nll_weight=nan"),
    (["loss.label_smoothing=0.5"], "loss.label_smoothing=0.5"),
    (["loss.mu=0"], "loss.mu=0.0"),
    (["loss.gamma=-0.1"], "loss.gamma=-0.1"),
    (["loss.alpha=0"], "loss.alpha=0.0"),
    (["loss.history_weight=-1"], "loss.history_weight=-1.0"),
    (["trainer.lr=0"], "trainer.lr=0.0"),
    (["trainer.lr=nan"], "trainer.lr=nan"),
    (["trainer.epochs=0"], "trainer.epochs=0.0"),
    (["trainer.epochs=inf"], "trainer.epochs=inf"),
    (["trainer.warmup_ratio=1.0"], "trainer.warmup_ratio=1.0"),
    (["trainer.weight_decay=-0.01"], "trainer.weight_decay=-0.01"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.grad_accumulation=0"], "trainer.grad_accumulation=0"),
    (["trainer.max_grad_norm=-1"], "trainer.max_grad_norm=-1.0"),
    (["trainer.save_steps=-1"], "trainer.save_steps=-1"),
    (["trainer.logging_steps=0"], "trainer.logging_steps=0"),
    (["trainer.world_size=0"], "trainer.world_size=0"),
    (["generation.temperature=0"], "generation.temperature=0.0"),
    (["generation.top_p=0"], "generation.top_p=0.0"),
    (["generation.top_p=1.5"], "generation.top_p=1.5"),
    (["generation.max_new_tokens=0"], "generation.max_new_tokens=0"),
    (["data.n_train=0"], "data.n_train=0"),
    (["data.n_test=0"], "data.n_test=0"),
    (["data.n_train=-5"], "data.n_train=-5"),
    (["sft.n_train=0"], "sft.n_train=0"),
    (["lora.dropout=1.0"], "lora.dropout=1.0"),
    (["lora.r=0"], "lora.r=0"),
    (["opponent.mixture_weight=1.5"], "opponent.mixture_weight=1.5"),
    (["eval.limit=0"], "eval.limit=0"),
    (["eval.batch_size=0"], "eval.batch_size=0"),
    (["seed=-1"], "seed=-1"),
    (["iter=-1"], "iter=-1"),
    (["logger.init_timeout=0"], "logger.init_timeout=0.0"),
    (["data.difficulty=[0]"], "data.difficulty=[0]"),
    (["data.difficulty=[]"], "data.difficulty=[]"),
    (["data.n_train=2000000"], "makes at most 1000000 problems"),
    (["+schedule.1.lr=-1"], "schedule.1.lr=-1"),
    (["+schedule.1.lr=nan"], "schedule.1.lr=nan"),
    (["+schedule.1.lr=fast"], "schedule.1.lr='fast'"),
    (["+schedule.x.lr=1"], "schedule.x"),
    (["+schedule.1.foo=1"], "schedule.1.foo"),
    (["+schedule.1.mix_previous=maybe"], "schedule.1.mix_previous='maybe'"),
    (["+spin.given_pairs.0.n=0", "+spin.given_pairs.0.path=x.jsonl"], "spin.given_pairs.0.n=0"),
    (["+spin.given_pairs.0.split=train"], "spin.given_pairs.0.path"),
    (["+eval.settings.arith_gsm.num_fewshot=-1"], "eval.settings.arith_gsm.num_fewshot=-1"),
    # settings that cannot work together
    (["model.max_prompt_length=512", "model.max_length=512"], "model.max_prompt_length=512"),
    (["opponent=fictitious", "spin.mix_previous=true"], "spin.mix_previous=false"),
    (["lora.quantize=4bit"], "lora.enabled=true"),
    (["loss=sigmoid", "loss.name=rpo"], "loss.nll_weight"),
    (["loss=hinge", "loss.label_smoothing=0.1"], "loss.label_smoothing=0.1"),
    (["data=jsonl"], "data.path"),
    (["baseline=dpo", "baseline.preferences.source=jsonl"], "baseline.preferences.path"),
    (["generation.prompt_format=Q:"], "generation.prompt_format='Q:'"),
    (["name=a/b"], "name='a/b'"),
    (["trainer.distributed=ddp"], "trainer.distributed"),
    # files and folders
    (["data=jsonl", "data.path={root}/missing.jsonl"], "missing.jsonl: no such file"),
    (["data=jsonl", "data.path={malformed}"], "malformed.jsonl line 2"),
    (["data=jsonl", "data.path={no_prompt}"], "field 'prompt' is missing"),
    (["data=jsonl", "data.path={empty_response}"], "field 'response' is empty"),
    (["data=jsonl", "data.path={number_prompt}"], "field 'prompt' is a int"),
    (["data=jsonl", "data.path={no_messages}", "data.messages_field=messages"], "'messages'"),
    (["data=jsonl", "data.path={array}"], "array.jsonl line 1"),
    (["data=jsonl", "data.path={empty}"], "empty.jsonl"),
    (["data=jsonl", "data.path={no_train_split}"], "no_train_split"),
    (["paths.root={a_file}"], "a_file is a file"),
    (["paths.root={artifacts_file}"], "artifacts is a file"),
]


def test_the_table_tries_at_least_sixty_bad_inputs():
    assert len(CASES) >= 60


@pytest.mark.parametrize(("overrides", "named"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_stops_with_one_line_and_changes_nothing(
    overrides, named, earlier, files, capsys
):
    places = {"root": earlier, **files}
    overrides = [o.format(**places) for o in overrides]
    if not any(o.startswith("paths.root=") for o in overrides):
        overrides.append(f"paths.root={earlier}")
    before = tree(earlier)
    code, err = start(overrides, capsys)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}, stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert named.format(**places) in lines[0], lines[0]
    assert "Traceback" not in err
    assert tree(earlier) == before


def enum_values(key: str) -> st.SearchStrategy:
    return st.sampled_from([*ALLOWED[key], "nope"])


def number_values() -> st.SearchStrategy:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.integers(min_value=-(10**9), max_value=10**9),
        st.sampled_from(["null", "abc"]),
    )


def override_text(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf: Hydra's own spelling
    return "null" if value is None else str(value)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same draws on every run: CI fails for a reason, not by chance
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_value_of_any_key_starts_or_stops_with_one_line(data, earlier, capsys):
    """Drawn values of every number and name the schema checks: the job starts with
    exactly the value given, or stops with exit 2 and one line naming the key; never a
    traceback, never a value silently changed."""
    key = data.draw(st.sampled_from(sorted({*RANGES, *ALLOWED})), label="key")
    value = data.draw(enum_values(key) if key in ALLOWED else number_values(), label="value")
    text = override_text(value)
    code, err = start([f"{key}={text}", f"paths.root={earlier}"], capsys)
    if code == 0:
        got = compose_config(*BASE, f"{key}={text}", f"paths.root={earlier}")
        chosen = got
        for part in key.split("."):
            chosen = chosen[part]
        if text == "null":
            assert chosen is None, (key, chosen)
        elif key in ALLOWED or text == "abc":
            assert str(chosen) == text, (key, value, chosen)
        else:
            assert float(chosen) == float(value), (key, value, chosen)
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert key in lines[0] or key.rsplit(".", 1)[-1] in lines[0], lines[0]


# A few through the real command line: the console a user sees, and nothing left behind.
SUBPROCESS_CASES = [
    ("train.py", ["data.n_train=-5"], "data.n_train=-5"),
    ("train.py", ["paths.root=/proc/spin-cannot-write"], "paths.root='/proc/spin-cannot-write'"),
    ("train.py", ["loss.beta=nan"], "loss.beta=nan"),
    ("evaluate.py", ["eval.batch_size=0"], "eval.batch_size=0"),
]


@pytest.mark.parametrize(("script", "overrides", "named"), SUBPROCESS_CASES)
def test_a_bad_command_line_prints_one_line_and_leaves_no_folder(
    script, overrides, named, tmp_path
):
    root = tmp_path / "outputs"
    if not any(o.startswith("paths.root=") for o in overrides):
        overrides = [*overrides, f"paths.root={root}"]
    proc = run_entry(script, *BASE, *overrides, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert named in proc.stderr and proc.stderr.startswith("Error: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not [p for p in root.rglob("*") if p.is_file()], "a failed start left files behind"


def test_a_planning_sweep_prints_its_plans_and_no_report_error(tmp_path):
    proc = run_entry(
        "sweep.py", "beta", "experiment=tiny", "dry_run=true", f"paths.root={tmp_path}"
    )
    assert "Sweep beta" in proc.stdout
    assert "Error" not in proc.stderr and "report.json" not in proc.stderr


def test_report_and_sweep_faults_are_one_line(tmp_path):
    missing = run_entry("report.py", str(tmp_path / "none"), check=False)
    unknown = run_entry("sweep.py", "nope", check=False)
    for proc in (missing, unknown):
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_shell_keeps_bugs_as_tracebacks(capsys):
    """Only a user's faults become one line: a bug keeps its traceback for whoever fixes it."""
    with pytest.raises(ZeroDivisionError):
        guarded("a test job", "", lambda: 1 / 0)
