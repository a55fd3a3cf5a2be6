"""Scoring one model outside the chain (``evaluate.py``), through the chain's own code.

The model is scored by :meth:`spin.pipeline.Pipeline.evaluate` against the same artifact
store, so a checkpoint the chain produced keeps its provenance key: scoring it again with
the same settings does no work, and the chain finds scores made here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spin.artifacts import spec_key
from spin.job import start_job
from spin.pipeline import ModelRef, Pipeline, scores


def artifact_key(directory: Path) -> str | None:
    """The key of a model artifact of the store (a start model's directory, or a trained
    model's ``model/`` folder inside its artifact), or None for any other directory."""
    if (directory / "spec.json").is_file() and directory.parent.name == "model":
        return directory.name
    parent = directory.parent
    if directory.name == "model" and (parent / "spec.json").is_file():
        return parent.name if parent.parent.name == "model" else None
    return None


def directory_key(directory: Path) -> str:
    """A key for a model directory from outside the chain: its path and its files' names,
    sizes and modification times, so replaced weights are scored again."""
    files = [
        (p.relative_to(directory).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    ]
    return spec_key({"directory": str(directory), "files": files})


def model_ref(cfg: DictConfig, pipeline: Pipeline) -> ModelRef:
    """``model.path`` when it is a local directory of a non-hub model group (a chain
    checkpoint or any Hugging Face model folder); otherwise the configured start model."""
    path = cfg.model.path
    if path and Path(path).is_dir():
        directory = Path(path).resolve()
        key = artifact_key(directory)
        if key is not None:
            return ModelRef(key, str(directory))
        if cfg.model.source != "hub":
            return ModelRef(directory_key(directory), str(directory))
    return pipeline.start_model()[0]


def score(cfg: DictConfig, job_dir: Path, job_name: str) -> tuple[ModelRef, dict[str, Any]]:
    """Score the model ``cfg`` names; log like the chain logs an iteration's output."""
    tracker = start_job(cfg, job_dir, job_name, "eval")
    try:
        pipeline = Pipeline(cfg, tracker)
        ref = model_ref(cfg, pipeline)
        result = pipeline.evaluate(ref)
        values = scores(result)
        tracker.log({f"eval/{name}": value for name, value in values.items()})
        tracker.summary({"model": ref.location, **{f"final/{k}": v for k, v in values.items()}})
    finally:
        tracker.finish()
    return ref, result
