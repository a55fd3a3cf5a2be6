"""Scoring one model outside the chain (``evaluate.py``), through the chain's own code.

The model is scored by :func:`spin.stages.scoring.evaluate` against the same artifact
store, so a checkpoint the chain produced keeps its provenance key: scoring it again with
the same settings does no work, and the chain finds scores made here.

``model.path`` names the model, checked before any work: a local model directory, or a hub
id whose model is in the Hugging Face cache or on a reachable hub, loaded at
``model.revision`` whatever the model group. Anything else stops with a
:class:`~spin.errors.ConfigError` naming the path, never a silent fall-back to another model.
Every scoring names the model it scored (path or hub id, revision, key): printed, in the W&B
summary and in the eval artifact's results.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spin.artifacts import spec_key, verify
from spin.errors import ConfigError
from spin.job import start_job
from spin.models import MODEL_FILES, download_command, is_hub_id, location_problem
from spin.stages.context import Context
from spin.stages.loading import ModelRef
from spin.stages.scoring import evaluate, identity, scores
from spin.stages.start import base_model, start_model
from spin.tracking import Tracker


def artifact_key(directory: Path) -> str | None:
    """The key of a model artifact of the store (a start model's directory, or a trained
    model's ``model/`` folder inside its artifact), or None for any other directory."""
    if (directory / "spec.json").is_file() and directory.parent.name == "model":
        return directory.name
    parent = directory.parent
    if directory.name == "model" and (parent / "spec.json").is_file():
        return parent.name if parent.parent.name == "model" else None
    return None


def artifact_folder(directory: Path) -> Path:
    """The artifact a model directory of the store belongs to (:func:`artifact_key`): the
    directory itself for a start model, its parent for a trained model's ``model/``."""
    return directory if (directory / "spec.json").is_file() else directory.parent


def directory_key(directory: Path) -> str:
    """A key for a model directory from outside the chain: its path and its files' names,
    sizes and modification times, so replaced weights are scored again."""
    files = [
        (p.relative_to(directory).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    ]
    return spec_key({"directory": str(directory), "files": files})


def hub_key(repo_id: str, revision: str | None) -> str:
    """A key for a hub model scored under a model group of another source: its id, and its
    revision when one is pinned."""
    return spec_key({"hub": repo_id} | ({"revision": revision} if revision else {}))


def model_location(cfg: DictConfig) -> str | None:
    """What is loaded by path or hub id: ``model.path``, else a hub model group's name;
    None for a start model built in code or converted from a GGUF file."""
    if cfg.model.path:
        return str(cfg.model.path)
    return str(cfg.model.name) if cfg.model.source == "hub" else None


def check_model(cfg: DictConfig, key: str = "model.path") -> None:
    """Stop before any work unless the model to score can be loaded here; the message, for
    the config ``key`` that names it, says what was expected and how to get a hub model."""
    location = model_location(cfg)
    if location is None:
        return
    problem = location_problem(location, cfg.model.revision)
    if problem is None:
        return
    expected = (
        f"{key}={location!r} {problem}. Expected a local model directory ({MODEL_FILES}, "
        "e.g. outputs/artifacts/model/<key>/model) or a hub id (owner/name) whose model is in "
        "the Hugging Face cache or on a reachable hub"
    )
    if not is_hub_id(location):
        raise ConfigError(expected)
    raise ConfigError(f"{expected}. {fetch_hint(location, cfg.model.revision, key)}")


def fetch_hint(repo_id: str, revision: str | None, key: str) -> str:
    """How to get a hub model that is not at hand: download it, or point ``key`` at a copy."""
    return (
        f"Fetch it with `{download_command(repo_id, revision)}` where the hub is reachable "
        f"(and copy the cache, HF_HOME, here), or set {key} to a local copy"
    )


def model_ref(cfg: DictConfig, ctx: Context) -> ModelRef:
    """The model ``cfg`` names (checked by :func:`check_model`): a model artifact of the store
    under its own key; under a ``hub`` model group the group's start model (the key a chain
    starting from it has); otherwise a directory or hub id under a key of its own. Without
    ``model.path``, the configured start model."""
    location = model_location(cfg)
    if location is None:
        return start_model(ctx)[0]
    local = Path(location)
    key = artifact_key(local.resolve()) if local.is_dir() else None
    if key is not None:
        # Scores stored under the key are reused only for the weights the key was built
        # with: a damaged or cut file stops here, as the chain stops on it.
        verify(artifact_folder(local.resolve()))
        return ModelRef(key, str(local.resolve()))
    if cfg.model.source == "hub":
        return base_model(ctx)
    if local.is_dir():
        return ModelRef(directory_key(local.resolve()), str(local.resolve()))
    return ModelRef(hub_key(location, cfg.model.revision), location)


def describe(identity: dict[str, Any]) -> str:
    """A model's identity in one line: a directory, or a hub id at its revision; its key."""
    if Path(identity["path"]).is_dir():
        return f"{identity['path']} (local directory; key {identity['key']})"
    revision = identity["revision"] or "main (none pinned)"
    return f"{identity['path']} (hub id at revision {revision}; key {identity['key']})"


def score_with(cfg: DictConfig, tracker: Tracker) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the model ``cfg`` names and return its identity and the results; the model is
    assumed checked (:func:`check_model`)."""
    ctx = Context(cfg, tracker)
    ref = model_ref(cfg, ctx)
    return identity(cfg, ref), evaluate(ctx, ref)


def score(cfg: DictConfig, job_dir: Path, job_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the model ``cfg`` names; log like the chain logs an iteration's output, and
    record which model was scored in the W&B summary."""
    check_model(cfg)
    tracker = start_job(cfg, job_dir, job_name, "eval")
    try:
        identity, result = score_with(cfg, tracker)
        values = scores(result)
        tracker.log({f"eval/{name}": value for name, value in values.items()})
        tracker.summary({"model": identity, **{f"final/{k}": v for k, v in values.items()}})
    finally:
        tracker.finish()
    return identity, result
