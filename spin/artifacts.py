"""Content-addressed artifact store shared by every job under one outputs root.

An artifact (a model, a generation set, reference log-probabilities, scores) lives in
``<root>/artifacts/<kind>/<key>`` where ``key`` hashes exactly the settings that determine
it, including the keys of the artifacts it was built from. Two jobs that need the same
thing therefore compute the same key and the second one finds it done.

A build happens in ``<key>.partial`` under a per-key file lock and is renamed into place
when complete, so readers never see half an artifact, parallel jobs wait for each other,
and an interrupted build leaves its partial directory for the next attempt to resume from.
The lock is an OS-level ``flock``: the kernel releases it when its holder dies, so a killed
job never leaves a lock that blocks others.

Every build records its wall time and its peak resident memory in ``build.json`` (a resumed
build: those of the attempt that finished it), the costs a job's report shows per stage.
The last file a build writes is ``manifest.json``, the size of every file in the artifact.
Reusing an artifact checks it (and that ``spec.json`` is the spec asked for), so a
directory damaged after it was built (files deleted, truncated, a copy cut short) is
reported, naming what is wrong, instead of being fed to the next stage.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from spin.errors import ArtifactError, DiskFullError
from spin.memory import peak_memory

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
MANIFEST_FILE = "manifest.json"
BUILD_FILE = "build.json"
# A job waiting for another job's build says so this often, so an idle job explains itself.
WAIT_LOG_INTERVAL_S = 60.0


def spec_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    kind: str
    key: str
    path: Path
    built: bool


@dataclass
class ArtifactStore:
    """Builds each artifact at most once; ``events`` records what this process built or reused."""

    root: Path
    events: list[Artifact] = field(default_factory=list)
    wait_log_interval_s: float = WAIT_LOG_INTERVAL_S

    def locate(self, kind: str, spec: dict[str, Any]) -> tuple[str, Path]:
        key = spec_key(spec)
        return key, self.root / "artifacts" / kind / key

    def get_or_build(
        self,
        kind: str,
        spec: dict[str, Any],
        build: Callable[[Path], None],
        config_yaml: str | None = None,
    ) -> Artifact:
        """Return the artifact for ``spec``, calling ``build(work_dir)`` only if it is missing.

        ``build`` writes into ``work_dir``, which may hold what an interrupted earlier
        attempt left there; it is renamed to the final path only after ``build`` returns.
        """
        key, final = self.locate(kind, spec)
        if not final.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(final) + ".lock")
            acquire_announced(lock, f"{kind}/{key}", self.wait_log_interval_s)
            try:
                if not final.is_dir():
                    self._build(final, spec, build, config_yaml)
                    return self._record(Artifact(kind, key, final, built=True))
            finally:
                lock.release()
        verify(final, spec)
        return self._record(Artifact(kind, key, final, built=False))

    def _build(
        self,
        final: Path,
        spec: dict[str, Any],
        build: Callable[[Path], None],
        config_yaml: str | None,
    ) -> None:
        what = f"{final.parent.name}/{final.name}"
        work = final.with_name(final.name + ".partial")
        resumed = work.is_dir() and any(work.iterdir())
        try:
            work.mkdir(exist_ok=True)
            (work / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
            if config_yaml is not None:
                (work / "config.yaml").write_text(config_yaml)
            log.info("Building %s%s", what, f" (resuming from {work})" if resumed else "")
            start = time.perf_counter()
            with peak_memory() as meter:
                build(work)
            seconds = time.perf_counter() - start
            write_json(work / BUILD_FILE, {"seconds": seconds, "peak_memory_gb": meter.peak_gb})
            write_manifest(work)
        except Exception as err:
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise _disk_full(what, work, err) from err
            if resumed:
                raise _resume_error(what, work, err) from err
            raise
        os.replace(work, final)

    def _record(self, artifact: Artifact) -> Artifact:
        self.events.append(artifact)
        log.info("%s %s/%s", "Built" if artifact.built else "Reused", artifact.kind, artifact.key)
        return artifact


def _disk_full(what: str, work: Path, err: OSError) -> DiskFullError:
    """A full disk during a build: name the file, and say that nothing done is lost."""
    written = err.filename or work
    return DiskFullError(
        errno.ENOSPC,
        f"disk full (no space left on device) while writing {written}, building {what}: "
        f"free some space and rerun. The finished artifacts and what {work} holds are kept, "
        "and the rerun resumes from there",
        str(written),
    )


def _resume_error(what: str, work: Path, err: Exception) -> ArtifactError:
    """A build that failed on what an earlier, interrupted attempt left: say where that is."""
    return ArtifactError(
        f"building {what} failed while resuming from {work}, left by an interrupted earlier "
        f"attempt: {err}. If that directory is damaged, delete it and rerun to build {what} "
        "from scratch"
    )


def acquire_announced(lock: FileLock, what: str, interval_s: float) -> None:
    """Acquire ``lock``, logging every ``interval_s`` while another job holds it, so a job
    that sits idle waiting for another's build says why."""
    start = time.monotonic()
    timeout = 0.0
    while True:
        try:
            lock.acquire(timeout=timeout)
            return
        except Timeout:
            log.info(
                "Waiting for %s being built by another job (%.0f s so far; lock %s)",
                what,
                time.monotonic() - start,
                lock.lock_file,
            )
            timeout = interval_s


def file_sizes(directory: Path) -> dict[str, int]:
    """The size of every file under ``directory`` but the manifest, by relative path."""
    return {
        path.relative_to(directory).as_posix(): path.stat().st_size
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }


def write_manifest(directory: Path) -> None:
    """Record the files of a finished artifact; written last, it marks the build complete.

    Also the way to adopt an artifact built before manifests were written:
    ``python -m spin.artifacts <dir>``.
    """
    write_json(directory / MANIFEST_FILE, {"files": file_sizes(directory)})


def verify(directory: Path, spec: dict[str, Any] | None = None) -> None:
    """Raise ArtifactError naming ``directory`` and what is wrong unless it is the complete
    artifact for ``spec`` (for any spec, when None: an artifact met by its path, as
    evaluate.py meets one): its manifest's files all present at their recorded sizes."""
    problem = (spec is not None and _spec_problem(directory, spec)) or _manifest_problem(directory)
    if problem:
        raise ArtifactError(
            f"{directory}: {problem}, so it is not a complete artifact. Delete it (or move it "
            "aside) and rerun to rebuild it"
        )


def _spec_problem(directory: Path, spec: dict[str, Any]) -> str | None:
    """What makes ``directory`` another spec's artifact, if anything (a hand edit, a copy
    put in the wrong place)."""
    path = directory / SPEC_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return f"{SPEC_FILE} is missing"
    except (OSError, ValueError) as err:
        return f"{SPEC_FILE} is unreadable ({err})"
    expected = json.loads(json.dumps(spec, default=str))
    if stored != expected:
        changed = sorted(
            k for k in expected.keys() | stored.keys() if stored.get(k) != expected.get(k)
        )
        return f"{SPEC_FILE} does not match the spec requested for it (differs in {changed})"
    return None


def _manifest_problem(directory: Path) -> str | None:
    """Which recorded files are missing or resized; extra files (caches a reader adds) are
    allowed."""
    path = directory / MANIFEST_FILE
    try:
        recorded = json.loads(path.read_text())["files"]
    except FileNotFoundError:
        return (
            f"{MANIFEST_FILE}, written when a build completes, is missing (if the artifact was "
            "built before manifests were written and is complete, record its files with "
            f"`python -m spin.artifacts {directory}` instead)"
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST_FILE} is unreadable ({err!r})"
    present = file_sizes(directory)
    missing = sorted(set(recorded) - set(present))
    if missing:
        return f"{len(missing)} file(s) listed in {MANIFEST_FILE} are missing: {missing[:5]}"
    resized = [
        f"{name} ({present[name]} bytes, expected {size})"
        for name, size in recorded.items()
        if present[name] != size
    ]
    if resized:
        return f"file(s) differ in size from {MANIFEST_FILE}: {resized[:5]}"
    return None


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically so a reader never sees a truncated file; a full disk is
    reported as such, naming ``path``, and leaves no temporary file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC, f"disk full (no space left on device) while writing {path}", str(path)
            ) from err
        raise
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def build_record(artifact: Artifact | None) -> dict[str, Any]:
    """What building ``artifact`` cost (``seconds``, ``peak_memory_gb``); empty for none, or
    for an artifact built before builds recorded it."""
    path = artifact.path / BUILD_FILE if artifact is not None else None
    return read_json(path) if path is not None and path.is_file() else {}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        write_manifest(Path(name))
        print(f"{name}: recorded {len(file_sizes(Path(name)))} files in {MANIFEST_FILE}")
