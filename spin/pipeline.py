"""The SPIN iteration chain (DESIGN.md, "Pipeline semantics").

Iteration t: the start model M_t answers every training prompt (generation); the pairs of
t, plus those of t-1 when mixing is on, get their reference log-probabilities under the
frozen M_t (reference); M_{t+1} is trained from M_t with the loss (model); M_{t+1} is
scored on the held-out split (eval). Each stage is an artifact keyed by exactly what
determines it, so jobs of a sweep share stages and a finished command re-runs for free.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk
from omegaconf import DictConfig, OmegaConf

from evaluation import eval_spec, flat_scores, plan_tasks, prepare, run_tasks
from spin.artifacts import Artifact, ArtifactStore, read_json, spec_key, write_json
from spin.config import IterationSettings, iteration_settings, validate
from spin.data import PromptFormatter, load_splits
from spin.generation import make_generator
from spin.logprobs import reference_logps
from spin.models import load_model, materialize_start_model
from spin.tracking import Tracker
from spin.trainer import train_pairs, training_arguments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """A model of the chain: its provenance key and where its weights are."""

    key: str
    location: str


def section(cfg: DictConfig, *keys: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Plain-dict copy of config sections, for artifact specs."""
    out: dict[str, Any] = {}
    for key in keys:
        value = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
        out[key] = {k: v for k, v in value.items() if k not in drop}
    return out


class Pipeline:
    """Builds iterations 0..cfg.iter of one job, reusing every artifact that already exists."""

    def __init__(self, cfg: DictConfig, tracker: Tracker) -> None:
        self.cfg = cfg
        self.tracker = tracker
        self.store = ArtifactStore(Path(cfg.paths.root))
        self.config_yaml = OmegaConf.to_yaml(cfg)
        self.splits = load_splits(cfg.data)
        self._loaded: tuple[str, Any, Any] | None = None
        self.global_step = 0
        self._eval_rows: list[list[Any]] = []

    # ----------------------------------------------------------------- models
    def load(self, ref: ModelRef) -> tuple[Any, Any]:
        """Load a model, keeping the last one in memory: consecutive stages share it."""
        if self._loaded is None or self._loaded[0] != ref.key:
            self._loaded = None
            model, tokenizer = load_model(
                ref.location, self.cfg.model.dtype, self.cfg.model.trust_remote_code
            )
            self._loaded = (ref.key, model, tokenizer)
        return self._loaded[1], self._loaded[2]

    def formatter(self, tokenizer: Any) -> PromptFormatter:
        return PromptFormatter(tokenizer, self.cfg.generation.prompt_format)

    def start_model(self) -> ModelRef:
        cfg = self.cfg.model
        spec = section(self.cfg, "model", drop=("max_prompt_length", "max_length"))
        if cfg.source == "hub":
            return ModelRef(spec_key(spec), cfg.path or cfg.name)
        artifact = self._artifact("model", spec, lambda work: materialize_start_model(cfg, work))
        return ModelRef(artifact.key, str(artifact.path))

    # ----------------------------------------------------------------- stages
    def generations(self, model: ModelRef, t: int) -> Artifact:
        spec = {
            "model": model.key,
            "train": self.splits.train_fingerprint,
            **section(self.cfg, "generation", drop=("batch_size",)),
        }

        def build(work: Path) -> None:
            policy, tokenizer = self.load(model)
            fmt = self.formatter(tokenizer)
            records = self.splits.train
            generator = make_generator(policy, tokenizer, self.cfg.generation)
            completions = generator.generate(
                [fmt.prompt_text(r["prompt"]) for r in records],
                shard_dir=work / "shards",
                desc=f"iter {t}: generate",
            )
            rows = [
                {
                    "prompt": r["prompt"],
                    "real": r["response"],
                    "generated": c,
                    "identical": c.strip() == r["response"].strip(),
                }
                for r, c in zip(records, completions, strict=True)
            ]
            Dataset.from_list(rows).to_json(work / "pairs.jsonl")
            stats = dict(generator.last_stats)
            stats["identical_fraction"] = sum(r["identical"] for r in rows) / max(len(rows), 1)
            stats["n"] = len(rows)
            write_json(work / "stats.json", stats)
            shutil.rmtree(work / "shards")

        return self._artifact("generations", spec, build)

    def reference(self, model: ModelRef, gens: list[Artifact], t: int) -> Artifact:
        spec = {
            "model": model.key,
            "generations": [g.key for g in gens],
            "prompt_format": self.cfg.generation.prompt_format,
            "max_prompt_length": self.cfg.model.max_prompt_length,
            "max_length": self.cfg.model.max_length,
            "drop_identical": self.cfg.spin.drop_identical,
            "precision": self.cfg.trainer.precision,
        }

        def build(work: Path) -> None:
            start = time.perf_counter()
            policy, tokenizer = self.load(model)
            examples, n_identical = self._encode_pairs(tokenizer, gens)
            ref_real, ref_gen = reference_logps(
                policy,
                examples,
                self.cfg.trainer.ref_batch_size,
                tokenizer.pad_token_id,
                desc=f"iter {t}: reference",
                precision=self.cfg.trainer.precision,
            )
            for ex, r, g in zip(examples, ref_real, ref_gen, strict=True):
                ex["ref_real_logps"], ex["ref_generated_logps"] = r, g
            Dataset.from_list(examples).save_to_disk(work / "pairs")
            tokens = sum(len(e["real_input_ids"]) + len(e["generated_input_ids"]) for e in examples)
            write_json(
                work / "stats.json",
                {
                    "n_pairs": len(examples),
                    "n_identical": n_identical,
                    "tokens": tokens,
                    "seconds": time.perf_counter() - start,
                },
            )

        return self._artifact("reference", spec, build)

    def _encode_pairs(self, tokenizer: Any, gens: list[Artifact]) -> tuple[list[dict], int]:
        fmt = self.formatter(tokenizer)
        lengths = (self.cfg.model.max_prompt_length, self.cfg.model.max_length)
        examples, n_identical = [], 0
        for gen in gens:
            for row in read_pairs(gen):
                n_identical += row["identical"]
                if row["identical"] and self.cfg.spin.drop_identical:
                    continue
                real = fmt.encode(row["prompt"], row["real"], *lengths)
                generated = fmt.encode(row["prompt"], row["generated"], *lengths)
                examples.append(
                    {
                        "real_input_ids": real["input_ids"],
                        "real_response_mask": real["response_mask"],
                        "generated_input_ids": generated["input_ids"],
                        "generated_response_mask": generated["response_mask"],
                    }
                )
        if not examples:
            raise ValueError(
                "no training pairs left: every generated response equals the real one; "
                "set spin.drop_identical=false or use sampling (generation=sampling)"
            )
        return examples, n_identical

    def train(
        self, model: ModelRef, ref: Artifact, settings: IterationSettings, t: int
    ) -> tuple[ModelRef, Artifact]:
        loss = section(self.cfg, "loss")["loss"] | {"beta": settings.beta}
        trainer = section(self.cfg, "trainer", drop=("ref_batch_size",))["trainer"]
        trainer |= {"lr": settings.lr, "epochs": settings.epochs}
        spec = {"parent": model.key, "reference": ref.key, "loss": loss, "trainer": trainer}

        def build(work: Path) -> None:
            # Training mutates the weights: load a private copy and free the cached one.
            self._loaded = None
            policy, tokenizer = load_model(
                model.location, self.cfg.model.dtype, self.cfg.model.trust_remote_code
            )
            args = training_arguments(str(work / "checkpoints"), **trainer)
            pairs = load_from_disk(str(ref.path / "pairs"))
            history = train_pairs(
                policy,
                tokenizer,
                pairs,
                args,
                loss_name=self.cfg.loss.name,
                beta=settings.beta,
                label_smoothing=self.cfg.loss.label_smoothing,
                nll_weight=self.cfg.loss.nll_weight,
            )
            policy.save_pretrained(work / "model")
            tokenizer.save_pretrained(work / "model")
            write_json(work / "history.json", history)
            shutil.rmtree(work / "checkpoints", ignore_errors=True)

        artifact = self._artifact("model", spec, build)
        return ModelRef(artifact.key, str(artifact.path / "model")), artifact

    def evaluate(self, model: ModelRef) -> dict[str, Any]:
        """Score a model on the eval tasks: once per model and scoring settings, shared by
        every job (the start model is scored once for all jobs that start from it)."""
        plans = plan_tasks(self.cfg.eval)
        if not plans:
            return {}
        spec = {"model": model.key, "dtype": self.cfg.model.dtype}
        spec |= eval_spec(self.cfg.eval, plans)

        def build(work: Path) -> None:
            prepared = prepare(plans, work)  # fails here, before the model is loaded
            policy, tokenizer = self.load(model)
            write_json(work / "results.json", run_tasks(prepared, policy, tokenizer, self.cfg.eval))

        return read_json(self._artifact("eval", spec, build).path / "results.json")

    def _artifact(self, kind: str, spec: dict[str, Any], build: Any) -> Artifact:
        artifact = self.store.get_or_build(kind, spec, build, self.config_yaml)
        self.tracker.event(event="artifact", kind=kind, key=artifact.key, built=artifact.built)
        return artifact

    # ------------------------------------------------------------------ chain
    def run(self) -> dict[str, Any]:
        """Build iterations 0..iter; log each; return the job's report."""
        model = self.start_model()
        start_eval = self.evaluate(model)
        self._log_eval("start", None, start_eval)
        report: dict[str, Any] = {"start": scores(start_eval), "iterations": []}
        previous: Artifact | None = None
        for t in range(self.cfg.iter + 1):
            settings = iteration_settings(self.cfg, t)
            gen = self.generations(model, t)
            gens = [gen, previous] if (settings.mix_previous and previous is not None) else [gen]
            ref = self.reference(model, gens, t)
            trained, model_artifact = self.train(model, ref, settings, t)
            evaluation = self.evaluate(trained)
            self._log_iteration(t, gen, ref, model_artifact)
            self._log_eval("eval", t, evaluation)
            report["iterations"].append(
                {
                    "iteration": t,
                    "model": trained.location,
                    "settings": settings.__dict__,
                    "eval": scores(evaluation),
                    "identical_fraction": read_json(gen.path / "stats.json")["identical_fraction"],
                }
            )
            model, previous = trained, gen
        return report

    # ---------------------------------------------------------------- logging
    def _log_iteration(self, t: int, gen: Artifact, ref: Artifact, trained: Artifact) -> None:
        gen_stats = read_json(gen.path / "stats.json")
        ref_stats = read_json(ref.path / "stats.json")
        history = read_json(trained.path / "history.json")
        for entry in history:
            if "loss" not in entry:
                continue
            row = {f"train/{k}": v for k, v in entry.items() if k not in ("step", "epoch")}
            row["train/epoch"] = entry.get("epoch")
            row["train/global_step"] = self.global_step + entry["step"]
            self.tracker.log({"iteration": t, **row})
        final = next((e for e in history if "train_runtime" in e), {})
        self.global_step += max((e.get("step", 0) for e in history), default=0)
        self.tracker.log(
            {
                "iteration": t,
                "generation/identical_fraction": gen_stats["identical_fraction"],
                "generation/n": gen_stats["n"],
                "reference/n_pairs": ref_stats["n_pairs"],
                "reference/n_identical": ref_stats["n_identical"],
                "time/generation_s": gen_stats["seconds"],
                "time/reference_s": ref_stats["seconds"],
                "time/train_s": final.get("train_runtime"),
                "throughput/generation_tokens_per_s": gen_stats["tokens_per_second"],
                "throughput/reference_tokens_per_s": ref_stats["tokens"] / ref_stats["seconds"],
                "throughput/train_pairs_per_s": final.get("train_samples_per_second"),
            }
        )
        samples = read_pairs(gen)[: self.cfg.eval.n_samples]
        self.tracker.log_table(
            "generation/samples",
            ["iteration", "prompt", "real", "generated", "identical"],
            [[t, s["prompt"], s["real"], s["generated"], s["identical"]] for s in samples],
            iteration=t,
        )

    def _log_eval(self, prefix: str, t: int | None, result: dict[str, Any]) -> None:
        """``<prefix>/<task>/<metric>`` and ``<prefix>/average`` per model, and one table on the
        run with every model scored so far side by side (its last version holds them all)."""
        if not result:
            return
        values = scores(result)
        row = {f"{prefix}/{name}": value for name, value in values.items()}
        self.tracker.log(row if t is None else {"iteration": t, **row})
        label = "start model" if t is None else f"SPIN iteration {t}"
        self._eval_rows.append([label, *values.values()])
        axes = {} if t is None else {"iteration": t}
        self.tracker.log_table("eval/summary", ["model", *values], self._eval_rows, **axes)


def scores(result: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` -> value and ``average`` of an evaluation result."""
    return flat_scores(result["summary"]) if result else {}


def read_pairs(gen: Artifact) -> list[dict[str, Any]]:
    with (gen.path / "pairs.jsonl").open() as f:
        return [json.loads(line) for line in f]


def start_job(cfg: DictConfig, job_dir: Path, job_name: str, job_type: str) -> Tracker:
    """Validate the config before any work, save it beside the job's outputs, open tracking."""
    validate(cfg)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return Tracker(
        job_dir,
        cfg.logger,
        name=job_name,
        group=cfg.logger.group or cfg.name,
        job_type=job_type,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def run_job(cfg: DictConfig, job_dir: Path, job_name: str) -> dict[str, Any]:
    """Validate, track and run one job; write ``report.json`` into ``job_dir``."""
    tracker = start_job(cfg, job_dir, job_name, f"iter{cfg.iter}")
    try:
        report = Pipeline(cfg, tracker).run()
        report["job_dir"] = str(job_dir)
        report["wandb"] = tracker.wandb_location
        final = report["iterations"][-1]["eval"] if report["iterations"] else {}
        tracker.summary({f"final/{k}": v for k, v in final.items()})
        write_json(job_dir / "report.json", report)
    finally:
        tracker.finish()
    return report
