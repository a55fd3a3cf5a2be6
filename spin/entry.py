"""The shell every script runs in: train.py, evaluate.py, released.py (Hydra jobs) and
sweep.py, report.py, dashboard.py (plain command lines).

What each of them would otherwise repeat, and get subtly different: the config schema and the
resolvers the job folders are named with, warnings and third-party progress bars kept off the
console, a job folder no other job can claim, a user's fault as one line and exit code 2, and
Ctrl-C as one line saying that the same command resumes. A bug still ends in a traceback:
only the error types of :mod:`spin.faults` and Hydra's own config errors are a user's to fix.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from spin.config import check_name, folder_name, register_schema
from spin.errors import ConfigError
from spin.faults import FAULTS
from spin.tracking import METRICS_FILE, read_metrics

log = logging.getLogger("spin")
T = TypeVar("T")

CONF = Path(__file__).resolve().parents[1] / "conf"
# A job's folder is locked for as long as the job runs in it.
LOCK_FILE = ".job.lock"
# What a job folder holds before the job has recorded anything: Hydra's copy of the config,
# the job's log, its config.yaml and W&B's files of a run that did not start. A fault that
# leaves only these removes the folder.
UNRECORDED = {".hydra", "config.yaml", "wandb", LOCK_FILE}
STAMP = "%Y-%m-%d_%H-%M-%S"
# A record the log file keeps and the console leaves out (the console got its own line).
FILE_ONLY = {"console": False}
# Exit codes: a user's fault, and an interrupt (128 + SIGINT, as shells report it).
FAULT_EXIT = 2
# The lines of an OmegaConf error that locate it in the config tree, not what is wrong.
OMEGACONF_DETAILS = ("full_key:", "object_type=", "reference_type=")
INTERRUPT_EXIT = 130


def claim_folder(root: str, below: str) -> str:
    """A new folder ``<root>/<below>/<start time>`` created here and now, so no other job can
    have it: when a job started in the same second took that name, the next free
    ``<start time>_<n>``. Under a distributed launch the main process claims it and every
    process gets its path."""
    from spin import distributed

    parent = Path(root) / below
    if distributed.launched_world_size() > 1:
        distributed.init()
        return distributed.broadcast(new_folder(root, parent) if distributed.is_main() else None)
    return new_folder(root, parent)


def new_folder(root: str, parent: Path) -> str:
    """``<parent>/<start time>``, or the next free ``_<n>`` of it, created by this call
    (paths.root ``root`` is named when it cannot be)."""
    stamp = datetime.now().strftime(STAMP)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            folder = parent / (stamp if n == 1 else f"{stamp}_{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return str(folder)
    except OSError as err:
        raise ConfigError(
            f"paths.root={root!r}: cannot create the job folder in {parent} ({err}); expected "
            "a folder this user can write, e.g. paths.root=outputs"
        ) from err
    raise ConfigError(f"{parent}: no free job folder name for {stamp}")


def register() -> None:
    """The schema, and the resolvers conf/config.yaml names job folders with:
    ``spin_name`` checks ``name`` before any folder is made from it, ``spin_folder``
    flattens a sweep job's overrides into one folder name, ``spin_claim`` makes the job's
    (or sweep's) folder, unique to it. Cached like Hydra's ``now``: one folder per launch,
    which Hydra copies into each job of a sweep."""
    from omegaconf import OmegaConf

    register_schema()
    resolvers: dict[str, Callable[..., Any]] = {
        "spin_name": lambda value: check_name(value, "name"),
        "spin_folder": folder_name,
        "spin_claim": claim_folder,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=name == "spin_claim")


def quiet_console() -> None:
    """Python warnings and third-party progress bars to the job's log, not the console."""
    from spin import console

    console.capture_warnings()


def causes(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def one_line(err: BaseException) -> str:
    """A fault as one line: the project's own message when one lies in the chain of causes
    (a resolver's ConfigError inside Hydra's and OmegaConf's wrappers), else every
    wrapper's first line, OmegaConf's key and type details left out."""
    chain = causes(err)
    ours = [e for e in chain if isinstance(e, FAULTS)]
    if ours:
        return " ".join(str(ours[-1]).split())
    parts = dict.fromkeys(part for e in chain for part in _compact(str(e)) if part != "None")
    override = getattr(err, "override", None)  # Hydra's parse error knows the override
    heading = [f"cannot parse the override {override!r}:"] if override else []
    return " ".join([*heading, *parts])


def _compact(message: str) -> list[str]:
    """A Hydra or OmegaConf message's parts: a heading and the indented list under it become
    ``heading a, b, c``; OmegaConf's key and type details, its message templates and Hydra's
    config search path are left out."""
    parts: list[str] = []
    for line in message.splitlines():
        text = line.strip()
        if not text or "$" in text or text.startswith(OMEGACONF_DETAILS):
            continue
        if line[0] in " \t" and parts and parts[-1].endswith((":", ",")):
            parts[-1] = f"{parts[-1]} {text},"
        else:
            parts.append(text)
    parts = [p.rstrip(",") for p in parts]
    cut = next((i for i, p in enumerate(parts) if p.startswith("Config search path")), None)
    return parts[:cut]


def fail(message: str) -> NoReturn:
    """Print a user's fault once, keep it in the job's log, exit with code 2."""
    if logging.getLogger().handlers:  # once Hydra has set up the job's log
        log.error("Stopped: %s", message, extra=FILE_ONLY)
    print(f"Error: {message}", file=sys.stderr, flush=True)
    sys.exit(FAULT_EXIT)


def is_config_error(err: BaseException) -> bool:
    """Hydra's and OmegaConf's own errors: an override, group or value they reject while
    composing the config (a user's to fix, said in their message)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, HydraException | OmegaConfBaseException)


def guarded(what: str, resume: str, body: Callable[[], T], composing: bool = False) -> T:
    """Run ``body``; a user's fault becomes one line and exit 2, Ctrl-C one line naming
    ``what`` was interrupted and ``resume``, the way on, and exit 130. While ``composing``
    a config, Hydra's and OmegaConf's errors are the user's too; once the job runs, one of
    them is a bug and keeps its traceback."""
    try:
        return body()
    except KeyboardInterrupt:
        if logging.getLogger().handlers:
            log.warning("Interrupted: %s", what, extra=FILE_ONLY)
        print(f"\nInterrupted: {what}. {resume}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPT_EXIT)
    except Exception as err:
        ours = any(isinstance(e, FAULTS) for e in causes(err))
        if ours or (composing and is_config_error(err)):
            fail(one_line(err))
        raise


@dataclass(frozen=True)
class Job:
    """Where a Hydra job writes and what it is called (its overrides, else ``name``)."""

    dir: Path
    name: str
    hydra: Any


@contextmanager
def held(folder: Path) -> Iterator[None]:
    """The job folder, locked for this job while it runs: a second job sent to the same
    folder (an explicit ``hydra.run.dir``, a sweep rerun under one ``--tag``) stops before
    it writes anything. A fault before the job recorded anything removes the folder, so no
    empty or half-written job is left beside the real ones."""
    from filelock import FileLock, Timeout

    from spin import distributed

    if distributed.launched_world_size() > 1 and not distributed.is_main():
        yield  # the main process of a launch holds the folder for all of its processes
        return
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"{folder} is the folder of a job still running; give this job another one "
            "(hydra.run.dir, or sweep.py --tag) or wait for it to finish"
        ) from None
    try:
        yield
    except BaseException:
        _remove_if_unrecorded(folder)
        raise
    finally:
        lock.release()


def _remove_if_unrecorded(folder: Path) -> None:
    """Remove a job folder holding nothing but what every job writes before any work: its
    metrics may hold the job's ``sweep`` record, written as tracking starts, and no other."""
    names = {p.name for p in folder.iterdir()} - {p.name for p in folder.glob("*.log")}
    if names - UNRECORDED - {METRICS_FILE}:
        return
    if METRICS_FILE in names and any(
        record.get("event") != "sweep" for record in read_metrics(folder)
    ):
        return
    logging.shutdown()  # the log file handler closes before its folder goes
    shutil.rmtree(folder, ignore_errors=True)


def hydra_script(
    config_name: str, what: str, resume: str
) -> Callable[[Callable[[Any, Job], None]], Callable[[], None]]:
    """Make ``task(cfg, job)`` a Hydra script: composed from conf/``config_name``, run in
    its own locked job folder, inside :func:`guarded`. Hydra is asked to let every error
    through (``HYDRA_FULL_ERROR``) so that its config errors reach :func:`guarded` too."""

    def decorate(task: Callable[[Any, Job], None]) -> Callable[[], None]:
        import hydra
        from hydra.core.hydra_config import HydraConfig

        @functools.wraps(task)  # Hydra names the job (train.log) after the wrapped script
        def run(cfg: Any) -> None:
            quiet_console()
            hydra_cfg = HydraConfig.get()
            job = Job(
                Path(hydra_cfg.runtime.output_dir),
                hydra_cfg.job.override_dirname or cfg.name,
                hydra_cfg,
            )
            with held(job.dir):
                guarded(f"{what} in {job.dir}", resume, lambda: task(cfg, job))

        hydra_main = hydra.main(config_path=str(CONF), config_name=config_name, version_base="1.3")

        def main() -> None:
            register()
            os.environ["HYDRA_FULL_ERROR"] = "1"
            guarded(what, resume, hydra_main(run), composing=True)

        return main

    return decorate


def script(what: str, resume: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Make a plain command line's ``main(argv) -> exit code`` run inside :func:`guarded`;
    a fault's or an interrupt's exit code is returned like any other."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> int:
            quiet_console()
            try:
                return guarded(what, resume, lambda: main(*args, **kwargs))
            except SystemExit as stop:
                return stop.code if isinstance(stop.code, int) else FAULT_EXIT

        return run

    return decorate
