"""What every stage of one job shares: :class:`Context`."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin import distributed
from spin.artifacts import Artifact, ArtifactStore
from spin.config import given_pairs_config
from spin.data import load_given_pairs, load_splits
from spin.stages.loading import ModelCache, ModelRef
from spin.stages.prompts import check_prompts
from spin.tracking import Tracker


def section(cfg: DictConfig, *keys: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Plain-dict copy of config sections, for artifact specs."""
    out: dict[str, Any] = {}
    for key in keys:
        value = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
        out[key] = {k: v for k, v in value.items() if k not in drop}
    return out


class Context:
    """One job's settings, artifact store, tracker (which records every artifact built or
    reused), data splits and the model in memory: what the stage functions take, so each
    stage reads as what it computes rather than where its inputs live."""

    def __init__(self, cfg: DictConfig, tracker: Tracker | None) -> None:
        self.cfg = cfg
        self.tracker = tracker
        self.store = ArtifactStore(Path(cfg.paths.root))
        self.config_yaml = OmegaConf.to_yaml(cfg)
        self.splits = load_splits(cfg.data)
        self.models = ModelCache(cfg)
        self._long_prompts: int | None = None

    def artifact(
        self, kind: str, spec: dict[str, Any], build: Any, together: bool = False
    ) -> Artifact:
        """The artifact of ``spec``, built if missing: by the main process alone, or with
        ``together`` by every process of a distributed launch (spin/distributed.py)."""
        get = distributed.build_together if together else distributed.build_on_main
        artifact = get(self.store, kind, spec, build, self.config_yaml)
        self.tracker.event(event="artifact", kind=kind, key=artifact.key, built=artifact.built)
        return artifact

    def seeded(self, base: int) -> int:
        """A stage's seed ``base`` moved by the run's ``seed``; seed 0 keeps every seed
        (and every key) as it was."""
        return base + self.cfg.seed

    def long_prompts(self, model: ModelRef) -> int:
        """How many train prompts generation and training cut (checked once per job)."""
        if self._long_prompts is None:
            prompts = [r["prompt"] for r in self.splits.train]
            self._long_prompts = check_prompts(self.cfg, model, prompts, "data train")
        return self._long_prompts

    @cached_property
    def sft_records(self) -> list[dict]:
        """The records supervised fine-tuning trains on: ``sft.n_train`` of the data's train
        split (the SPIN split when unset), which hold every SPIN prompt (train splits nest).
        Read once per job: the SFT stage and every exact-world scoring use them."""
        n_train = len(self.splits.train) if self.cfg.sft.n_train is None else self.cfg.sft.n_train
        return load_splits(OmegaConf.merge(self.cfg.data, {"n_train": n_train})).train

    @cached_property
    def given(self) -> dict[int, tuple[list[dict], dict[str, Any]]]:
        """Iteration -> the pairs of its ``spin.given_pairs`` entry and where they came from,
        for iterations 0..iter: read and validated once, when first asked for."""
        entries = {t: given_pairs_config(self.cfg, t) for t in range(self.cfg.iter + 1)}
        return {
            t: load_given_pairs(given, f"spin.given_pairs.{t}", self.cfg.data.deduplicate)
            for t, given in entries.items()
            if given is not None
        }
