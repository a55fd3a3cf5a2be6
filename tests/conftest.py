"""Shared fixtures: composing the project's Hydra config, running train.py (in a subprocess,
as a user does, or in this process, the same code without the interpreter's start-up) and one
tiny chain built once per test session for the tests that only read it."""

from __future__ import annotations

import importlib.util
import io
import logging
import logging.config
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType
from unittest import mock

# The tiny model's matrices gain nothing from threads; with the tests spread over every core
# (pytest-xdist), a thread per core in each worker and in each train.py they start only makes
# them compete. Read by torch when it is imported: here, and in every process a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spin.entry import register
from spin.models import build_tiny
from spin.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# What a test's train.py sees besides the caller's environment: offline, W&B quiet.
ENTRY_ENV = {"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}

register()

# Local copies of the leaderboard tasks' data sets, in each hub data set's layout.
LEADERBOARD_FIXTURES = ROOT / "tests" / "fixtures" / "eval_leaderboard"
FIXTURE_OF = {
    "arc_challenge": "ai2_arc",
    "truthfulqa_mc2": "truthful_qa",
    "winogrande": "winogrande",
    "gsm8k": "gsm8k",
    "hellaswag": "hellaswag",
    "mmlu": "mmlu",
}


def on_fixtures(*tasks: str) -> list[str]:
    """Overrides that score ``tasks`` (all six by default) on their local fixtures."""
    return [
        f"eval.settings.{task}.dataset_path={LEADERBOARD_FIXTURES / FIXTURE_OF[task]}"
        for task in tasks or FIXTURE_OF
    ]


def compose_config(*overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess, as a user would."""
    return run_entry("train.py", *args, check=check)


def run_entry(
    script: str, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run an entry point (train.py, evaluate.py, ...) in a subprocess, as a user would:
    offline, with ``env`` added to the environment."""
    env = {**os.environ, **ENTRY_ENV, **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_in_process(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """train.py's ``main()`` with ``args`` as its command line, in this process: Hydra composes
    and runs the job (or a sweep's jobs) as it does in a subprocess, with what the script
    prints and its exit code returned as :func:`run_train` returns them. For tests of what
    a job builds; a test of the command line itself (a user's fault and its exit code, what
    the console shows) keeps :func:`run_train`."""
    return run_in_process("train.py", *args, check=check)


def run_in_process(
    script: str, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Entry point ``script`` (train.py, evaluate.py, sweep.py, ...) run in this process as
    :func:`run_entry` runs it in another: its ``main()`` with ``args`` as the command line,
    the repository as working directory, ``env`` added to the environment, and what it
    prints and its exit code (what ``main`` returns or exits with) in the result. The
    environment, Python's logging and the working directory are restored afterwards, so a
    job's log handlers do not outlive it."""
    main = entry_module(script).main
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {**ENTRY_ENV, **(env or {})}),
        mock.patch.object(sys, "argv", [str(ROOT / script), *args]),
        _logging_restored(),
        _cwd(ROOT),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            returned = main()
            code = returned if isinstance(returned, int) else 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            if stop.code is not None and not isinstance(stop.code, int):
                print(stop.code, file=sys.stderr)  # as the interpreter prints it
    proc = subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


_ENTRY_MODULES: dict[str, ModuleType] = {}


def entry_module(script: str) -> ModuleType:
    """The module of entry point ``script`` (``train.py``), loaded once, under its own name:
    Hydra names a job's log after it (train.log)."""
    name = Path(script).stem
    if name not in _ENTRY_MODULES:
        spec = importlib.util.spec_from_file_location(name, ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _ENTRY_MODULES[name] = module
    return _ENTRY_MODULES[name]


def _loggers() -> list[logging.Logger]:
    manager = logging.Logger.manager
    return [
        logging.root,
        *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]


@contextmanager
def _logging_restored() -> Iterator[None]:
    """Every logger's handlers, level and propagation as they were before: Hydra's job
    logging replaces the root's handlers (pytest's capture among them) with the job's console
    and log file, which are taken away afterwards (the file closed). Hydra's ``dictConfig``
    and a job's ``logging.shutdown()`` (before it removes a folder it did not use) would
    also close every handler the process has made so far, and one that closes its stream
    (absl's, which lm-eval brings) would close pytest's capture file: they close only the
    handlers made since, as they would in a process of the job's own."""
    saved = {lg: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in _loggers()}
    kept = {h for handlers, *_ in saved.values() for h in handlers}
    existing = {ref() for ref in logging._handlerList}
    shutdown = logging.shutdown

    def shutdown_new(handlers: list = logging._handlerList) -> None:
        shutdown([ref for ref in list(handlers) if ref() not in existing])

    warnings_captured = logging._warnings_showwarning is not None
    try:
        with (
            mock.patch.object(logging.config, "_clearExistingHandlers", logging._handlers.clear),
            mock.patch.object(logging, "shutdown", shutdown_new),
        ):
            yield
    finally:
        if not warnings_captured:
            logging.captureWarnings(False)  # the job sent Python's warnings to its log
        for lg in _loggers():
            for handler in lg.handlers:
                if handler not in kept and isinstance(handler, logging.FileHandler):
                    handler.close()  # the job's log file; a stream is not the handler's to close
            handlers, level, propagate, disabled = saved.get(lg, ([], logging.NOTSET, True, False))
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def job_dirs(root: Path) -> list[Path]:
    """The directories of the jobs run under outputs root ``root``."""
    return sorted(p.parent for p in root.rglob("report.json"))


def artifact_events(root: Path) -> list[dict]:
    """Every artifact a job under ``root`` built or reused, from the jobs' metrics mirrors."""
    return [
        rec
        for job in job_dirs(root)
        for rec in read_metrics(job)
        if rec["type"] == "event" and rec["event"] == "artifact"
    ]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tiny model's matrices are too small to gain from threads, and on a busy machine
    competing threads make each call many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this session sees (the session's base temp
    folder; without xdist, this process's own)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(factory: pytest.TempPathFactory, name: str, *args: str) -> Path:
    """The outputs root of ``train.py <args>``, run once for the whole session (whichever
    xdist worker asks first builds it while the others wait on its lock) and shared by the
    tests that only read it."""
    shared = shared_dir(factory)
    root, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            train_in_process(*args, f"paths.root={root}")
            done.touch()
    return root


# The tiny chain as `python train.py experiment=tiny` builds it: iteration 0, the start and the
# trained model scored on 4 documents per embedded task.
TINY_CHAIN = ("experiment=tiny",)


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outputs root of one TINY_CHAIN job, built once per session and shared: read it,
    never write into it (a test that adds to it takes :func:`tiny_chain_copy`)."""
    return built_once(tmp_path_factory, "tiny-chain", *TINY_CHAIN)


@pytest.fixture
def tiny_chain_copy(tiny_chain: Path, tmp_path: Path) -> Path:
    """A copy of :func:`tiny_chain`'s outputs root of this test's own, to write into."""
    copy = tmp_path / "tiny-chain"
    shutil.copytree(tiny_chain, copy)
    return copy


@pytest.fixture(scope="module")
def tiny():
    """A random-init tiny Llama and its character tokenizer."""
    return build_tiny(seed=0)
