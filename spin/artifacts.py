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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"


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
            with FileLock(str(final) + ".lock"):
                if not final.is_dir():
                    self._build(final, spec, build, config_yaml)
                    return self._record(Artifact(kind, key, final, built=True))
        return self._record(Artifact(kind, key, final, built=False))

    def _build(
        self,
        final: Path,
        spec: dict[str, Any],
        build: Callable[[Path], None],
        config_yaml: str | None,
    ) -> None:
        work = final.with_name(final.name + ".partial")
        work.mkdir(exist_ok=True)
        (work / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
        if config_yaml is not None:
            (work / "config.yaml").write_text(config_yaml)
        log.info("Building %s/%s", final.parent.name, final.name)
        build(work)
        os.replace(work, final)

    def _record(self, artifact: Artifact) -> Artifact:
        self.events.append(artifact)
        log.info("%s %s/%s", "Built" if artifact.built else "Reused", artifact.kind, artifact.key)
        return artifact


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically so a reader never sees a truncated file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
