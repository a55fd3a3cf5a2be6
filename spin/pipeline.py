"""The SPIN iteration chain (DESIGN.md, "Pipeline semantics").

Iteration t: the start model M_t answers every training prompt (generation); the pairs of
t, plus those of t-1 when mixing is on, get their reference log-probabilities under the
frozen M_t (reference); M_{t+1} is trained from M_t with the loss (model); M_{t+1} is
scored on the held-out split (eval). Each stage is an artifact keyed by exactly what
determines it, so jobs of a sweep share stages and a finished command re-runs for free.

The paper's comparisons go through the same stages (``baseline``): the start model as is,
further SFT on the real responses, DPO on preference pairs (chosen in place of real,
rejected of generated), and DPO after SPIN. An optional SFT stage (``sft.enabled``) makes
the start model from a base model on the data's own train split.

Launched on several processes (``trainer.distributed``), every process runs the job:
generation and the reference pass split their work across them, training is the Trainer's
DDP, FSDP or ZeRO-3, and the main process alone writes artifacts (spin/distributed.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from datasets import Dataset
from omegaconf import DictConfig, OmegaConf

from evaluation import (
    eval_spec,
    flat_items,
    flat_scores,
    flat_stderr,
    plan_tasks,
    prepare,
    run_tasks,
)
from spin import distributed
from spin.artifacts import Artifact, ArtifactStore, read_json, spec_key, write_json
from spin.config import IterationSettings, given_pairs_config, iteration_settings
from spin.data import (
    PromptFormatter,
    fingerprint,
    load_given_pairs,
    load_preferences,
    load_splits,
)
from spin.generation import make_generator
from spin.logprobs import reference_batches, reference_logps
from spin.lora import (
    load_quantized,
    lora_spec,
    merge_adapters,
    quantized,
    reference_spec,
    trainable_model,
)
from spin.models import hub_revision, load_model, load_tokenizer, materialize_start_model
from spin.pairs import ReferenceMix, all_pairs, draw_pairs, mixed_reference, read_pairs, write_pairs
from spin.precision import cast_saved_model, keep_fp32_masters, master_weights_spec
from spin.sft import encode_sft, train_sft
from spin.tracking import Tracker
from spin.trainer import last_checkpoint, train_pairs, training_arguments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """A model of the chain: its provenance key and where its weights are."""

    key: str
    location: str


@dataclass(frozen=True)
class Objective:
    """What one pairwise training run optimises: a SPIN iteration or a DPO baseline."""

    loss: str
    beta: float
    nll_weight: float
    label_smoothing: float
    lr: float
    epochs: float


def section(cfg: DictConfig, *keys: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Plain-dict copy of config sections, for artifact specs."""
    out: dict[str, Any] = {}
    for key in keys:
        value = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
        out[key] = {k: v for k, v in value.items() if k not in drop}
    return out


class Pipeline:
    """Builds what one job asks for (the chain up to ``cfg.iter``, or a baseline), reusing
    every artifact that already exists; ``rows`` collects one entry per model scored."""

    def __init__(self, cfg: DictConfig, tracker: Tracker) -> None:
        self.cfg = cfg
        self.tracker = tracker
        self.store = ArtifactStore(Path(cfg.paths.root))
        self.config_yaml = OmegaConf.to_yaml(cfg)
        self.splits = load_splits(cfg.data)
        self._loaded: tuple[str, Any, Any] | None = None
        self._long_prompts: int | None = None
        self.global_step = 0
        self._eval_rows: list[list[Any]] = []
        self.rows: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- models
    def load(self, ref: ModelRef) -> tuple[Any, Any]:
        """Load a model, keeping the last one in memory: consecutive stages share it."""
        if self._loaded is None or self._loaded[0] != ref.key:
            self._loaded = None
            cfg = self.cfg.model
            model, tokenizer = load_model(
                ref.location, cfg.dtype, cfg.trust_remote_code, cfg.revision
            )
            self._loaded = (ref.key, model, tokenizer)
        return self._loaded[1], self._loaded[2]

    def identity(self, model: ModelRef) -> dict[str, Any]:
        """Which model a score belongs to: where it loads from (a directory or a hub id), the
        hub revision (None for a directory, used as it is) and its artifact key. An eval
        artifact is shared by key, so its record names the location it was first scored at."""
        revision = hub_revision(model.location, self.cfg.model.revision)
        return {"path": model.location, "revision": revision, "key": model.key}

    def load_private(self, ref: ModelRef) -> tuple[Any, Any]:
        """A copy to train: training mutates the weights, so the cached one is freed; with
        ``lora.enabled``, in fresh adapters (spin/lora.py). Loaded in ``model.dtype`` like
        every model of the chain, its trainable weights then become float32 master weights
        (spin/precision.py)."""
        self._loaded = None
        if self.cfg.lora.enabled:
            model, tokenizer = trainable_model(ref.location, self.cfg)
        else:
            cfg = self.cfg.model
            model, tokenizer = load_model(
                ref.location, cfg.dtype, cfg.trust_remote_code, cfg.revision
            )
        return keep_fp32_masters(model), tokenizer

    def load_generator(self, ref: ModelRef) -> tuple[Any, Any]:
        """What generation runs on, and the tokenizer: the loaded model for the ``hf``
        backend; for ``vllm`` the model's location, since vLLM loads the weights itself and
        a second copy in the accelerator's memory would take what its KV cache needs."""
        if self.cfg.generation.backend != "vllm":
            return self.load(ref)
        self._loaded = None
        cfg = self.cfg.model
        return ref.location, load_tokenizer(ref.location, cfg.trust_remote_code, cfg.revision)

    def load_reference(self, ref: ModelRef) -> tuple[Any, Any]:
        """The frozen model of a reference pass: the model itself, or under QLoRA the 4-bit
        copy its adapters train on, so the reference is the policy without its adapters."""
        if not quantized(self.cfg):
            return self.load(ref)
        self._loaded = None
        return load_quantized(ref.location, self.cfg.model, self.cfg.lora.quantize)

    def formatter(self, tokenizer: Any, training: bool = True) -> PromptFormatter:
        """The prompt format of training, or with ``training=False`` of generation: one and
        the same unless ``generation.train_prompt_format`` sets training's apart."""
        gen = self.cfg.generation
        fmt = gen.train_prompt_format if training and gen.train_prompt_format else None
        return PromptFormatter(
            tokenizer, fmt or gen.prompt_format, gen.system_prompt, self.cfg.model.truncation
        )

    def format_spec(self) -> dict[str, Any]:
        """What a training-side artifact's key holds of the formatting: the prompt format, and
        the system turn and truncation rule only when set, so earlier keys stay valid."""
        gen = self.cfg.generation
        spec: dict[str, Any] = {"prompt_format": gen.train_prompt_format or gen.prompt_format}
        if gen.system_prompt is not None:
            spec["system_prompt"] = gen.system_prompt
        if self.cfg.model.truncation != "prompt":
            spec["truncation"] = self.cfg.model.truncation
        return spec

    def check_prompts(self, model: ModelRef, prompts: list[str], source: str) -> int:
        """Prompts of ``source`` over ``model.max_prompt_length`` tokens in the generation or
        the training format, counted (or, with ``model.prompt_overflow=reject``, refused) with
        only the tokenizer loaded, before the stages that use them; every model of a chain
        shares its start model's tokenizer. Under ``model.truncation=pair`` no prompt is cut
        up front (training cuts per pair), so none is counted."""
        cfg = self.cfg.model
        if cfg.truncation == "pair":
            return 0
        tokenizer = load_tokenizer(model.location, cfg.trust_remote_code, cfg.revision)
        sides = [True] if self.cfg.generation.train_prompt_format is None else [True, False]
        return max(
            self.formatter(tokenizer, training).check_lengths(
                prompts, cfg.max_prompt_length, cfg.prompt_overflow, source
            )
            for training in sides
        )

    def long_prompts(self, model: ModelRef) -> int:
        """How many train prompts generation and training cut (checked once per job)."""
        if self._long_prompts is None:
            prompts = [r["prompt"] for r in self.splits.train]
            self._long_prompts = self.check_prompts(model, prompts, "data train")
        return self._long_prompts

    def base_model(self) -> ModelRef:
        """The configured start model, keyed by the settings that pick its weights; the hub
        revision only when set, so the keys of runs made before it existed stay valid."""
        cfg = self.cfg.model
        spec = section(
            self.cfg,
            "model",
            drop=("max_prompt_length", "prompt_overflow", "truncation", "max_length", "n_params"),
        )
        if cfg.revision is None:
            del spec["model"]["revision"]
        if cfg.source == "hub":
            return ModelRef(spec_key(spec), cfg.path or cfg.name)
        artifact = self._artifact("model", spec, lambda work: materialize_start_model(cfg, work))
        return ModelRef(artifact.key, str(artifact.path))

    def start_model(self) -> tuple[ModelRef, Artifact | None]:
        """The model iteration 0 starts from: the configured one, or its SFT on the data's
        train split when ``sft.enabled`` (then also the SFT artifact, for its costs)."""
        base = self.base_model()
        self.long_prompts(base)
        if not self.cfg.sft.enabled:
            return base, None
        n_train = self.cfg.sft.n_train or len(self.splits.train)
        records = load_splits(OmegaConf.merge(self.cfg.data, {"n_train": n_train})).train
        self.check_prompts(base, [r["prompt"] for r in records], "sft data")
        return self.sft(base, records, self.cfg.sft.epochs, self.cfg.sft.lr, "sft")

    # ----------------------------------------------------------------- stages
    def sft(
        self, parent: ModelRef, records: list[dict], epochs: float, lr: float, stage: str
    ) -> tuple[ModelRef, Artifact]:
        trainer = self._trainer_settings(
            lr, epochs, batch_size=self.cfg.sft.batch_size, optimizer="adamw"
        )
        spec = {
            "parent": parent.key,
            "sft_data": fingerprint(records),
            **self.format_spec(),
            "max_prompt_length": self.cfg.model.max_prompt_length,
            "max_length": self.cfg.model.max_length,
            "trainer": self._trainer_key(trainer),
        } | self._weights_spec()

        def build(work: Path) -> None:
            args = self._training_arguments(work, trainer)
            policy, tokenizer = self.load_private(parent)
            lengths = (self.cfg.model.max_prompt_length, self.cfg.model.max_length)
            dataset = encode_sft(self.formatter(tokenizer), records, *lengths)
            log.info("%s: supervised fine-tuning on %d records", stage, len(records))
            history = train_sft(
                policy,
                tokenizer,
                dataset,
                args,
                resume_from=self._resume_point(work),
                save_to=self._trainer_saves(work),
            )
            tokens = sum(len(ids) for ids in dataset["input_ids"])
            self._finish_training(work, policy, tokenizer, parent, history, tokens * epochs)

        artifact = self._artifact("model", spec, build, together=True)
        return ModelRef(artifact.key, str(artifact.path / "model")), artifact

    def generations(self, model: ModelRef, t: int) -> Artifact:
        """Iteration ``t``'s pairs: ``model`` (M_t) answers every train prompt, unless
        ``spin.given_pairs.<t>`` names a data set of pairs to take instead."""
        if t in self.given:
            return self.given_pairs(model, t)
        spec = {
            "model": model.key,
            "train": self.splits.train_fingerprint,
            **section(self.cfg, "generation", drop=("batch_size", "train_prompt_format")),
        }
        if spec["generation"]["system_prompt"] is None:
            del spec["generation"]["system_prompt"]
        # The cut changes what cut prompts are answered; prompts that fit keep the old key.
        max_prompt_length = self.cfg.model.max_prompt_length
        if self.long_prompts(model):
            spec["max_prompt_length"] = max_prompt_length

        def build(work: Path) -> None:
            policy, tokenizer = self.load_generator(model)
            fmt = self.formatter(tokenizer, training=False)
            records = self.splits.train
            completions, stats = self._generate(
                policy,
                tokenizer,
                [fmt.prompt_text(r["prompt"]) for r in records],
                [fmt.prompt_ids(r["prompt"], max_prompt_length) for r in records],
                work / "shards",
                f"iter {t}: generate",
            )
            if completions is None:
                return  # another process's part, gathered by the main process
            rows = [
                {"prompt": r["prompt"], "real": r["response"], "generated": c}
                for r, c in zip(records, completions, strict=True)
            ]
            write_pairs(work, rows, stats)
            if stats["reused_shards"]:
                log.info("iter %d: reused %d shards", t, stats["reused_shards"])
            shutil.rmtree(work / "shards")

        return self._artifact("generations", spec, build, together=True)

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

    def given_pairs(self, model: ModelRef, t: int) -> Artifact:
        """Iteration ``t``'s pairs read from a data set (e.g. the authors' released
        SPIN_iter0) in the generations' layout, so t-1 mixing, the reference pass and
        training take them as generated pairs. Keyed by their content alone: no model made
        them, and generation settings do not touch them. ``model`` (M_t, whose tokenizer
        every model of the chain shares) checks their prompts' lengths."""
        pairs, source = self.given[t]
        self.check_prompts(model, [p["prompt"] for p in pairs], f"spin.given_pairs.{t}")

        def build(work: Path) -> None:
            stats = {"generated_tokens": None, "seconds": None, "tokens_per_second": None}
            write_pairs(work, [dict(p) for p in pairs], stats | {"source": source})

        return self._artifact("given_pairs", {"given_pairs": fingerprint(pairs)}, build)

    def _generate(
        self,
        policy: Any,
        tokenizer: Any,
        texts: list[str],
        prompt_ids: list[list[int]],
        shard_dir: Path,
        desc: str,
    ) -> tuple[list[str] | None, dict[str, Any]]:
        """Completions of ``texts`` in input order and the generation statistics. Under
        several processes each generates a block of whole shards (into its own shard
        directory, so a rerun on as many processes resumes it) and the main process gathers
        the blocks; the others get None."""
        cfg = self.cfg.generation
        model_cfg = self.cfg.model
        backend = {
            "dtype": model_cfg.dtype,
            "trust_remote_code": model_cfg.trust_remote_code,
            "revision": model_cfg.revision,
        }
        if distributed.world_size() == 1:
            generator = make_generator(policy, tokenizer, cfg, **backend)
            completions = generator.generate(
                texts, shard_dir=shard_dir, desc=desc, prompt_ids=prompt_ids
            )
            return completions, dict(generator.last_stats)
        start = time.perf_counter()
        part = distributed.my_block(len(texts), cfg.shard_size)
        mine: list[str] = []
        tokens = reused = 0
        if part:
            # Backends seed each shard from generation.seed and its place in the call: the
            # offset by the block's first shard keeps every shard of the job on its own
            # random stream (for the HF backend, the one it has on one process).
            first_shard = part.start // cfg.shard_size
            block_cfg = OmegaConf.merge(cfg, {"seed": cfg.seed + first_shard})
            generator = make_generator(policy, tokenizer, block_cfg, **backend)
            mine = generator.generate(
                texts[part.start : part.stop],
                shard_dir=shard_dir / f"from-{part.start}",
                desc=f"{desc} [{distributed.rank()}]",
                prompt_ids=prompt_ids[part.start : part.stop],
            )
            tokens = generator.last_stats["generated_tokens"]
            reused = generator.last_stats["reused_shards"]
        parts = distributed.gather((mine, tokens, reused))
        if parts is None:
            return None, {}
        seconds = time.perf_counter() - start
        tokens = sum(p[1] for p in parts)
        stats = {
            "generated_tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
            "reused_shards": sum(p[2] for p in parts),
        }
        return [c for p in parts for c in p[0]], stats

    def preferences(self) -> Artifact:
        """The DPO baselines' pairs in the generations' layout: chosen as real, rejected as
        generated. Keyed by their content, so an edited preference file is picked up."""
        pairs = load_preferences(self.cfg.baseline.preferences, self.splits.train)
        spec = {"preferences": fingerprint(pairs)}

        def build(work: Path) -> None:
            rows = [
                {"prompt": p["prompt"], "real": p["chosen"], "generated": p["rejected"]}
                for p in pairs
            ]
            write_pairs(work, rows, {"generated_tokens": None, "seconds": None})

        return self._artifact("preferences", spec, build)

    def reference(
        self, model: ModelRef, gens: list[Artifact], stage: str, draw_seed: int | None = None
    ) -> Artifact:
        """Reference log-probabilities of ``model`` on the pairs of ``gens``: all of them, or
        with ``draw_seed`` one pair per prompt drawn from the sets (fictitious play)."""
        spec = {
            "model": model.key,
            "generations": [g.key for g in gens],
            **self.format_spec(),
            "max_prompt_length": self.cfg.model.max_prompt_length,
            "max_length": self.cfg.model.max_length,
            "drop_identical": self.cfg.spin.drop_identical,
            "precision": self.cfg.trainer.precision,
        } | reference_spec(self.cfg)
        if draw_seed is not None:
            spec["draw_seed"] = draw_seed

        def build(work: Path) -> None:
            start = time.perf_counter()
            policy, tokenizer = self.load_reference(model)
            rows = draw_pairs(gens, draw_seed) if draw_seed is not None else all_pairs(gens)
            examples, n_identical = self._encode_pairs(tokenizer, rows)
            scored = self._reference_logps(policy, tokenizer, examples, stage, work / "chunks")
            if scored is None:
                return  # another process's part, gathered by the main process
            ref_real, ref_gen = scored
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
            shutil.rmtree(work / "chunks")

        return self._artifact("reference", spec, build, together=True)

    def _reference_logps(
        self, policy: Any, tokenizer: Any, examples: list[dict], stage: str, chunk_dir: Path
    ) -> tuple[list[float], list[float]] | None:
        """Reference log-probabilities of ``examples`` (real, generated) in input order.
        Under several processes each scores a run of whole batches of the one-process
        pass, so the values are the same, and the main process gathers them; the others
        get None."""
        batch_size = self.cfg.trainer.ref_batch_size
        score = {
            "batch_size": batch_size,
            "pad_token_id": tokenizer.pad_token_id,
            "precision": self.cfg.trainer.precision,
        }
        desc = f"{stage}: reference"
        if distributed.world_size() == 1:
            return reference_logps(policy, examples, desc=desc, chunk_dir=chunk_dir, **score)
        batches = reference_batches(examples, batch_size)
        part = distributed.my_block(len(batches), 1)
        positions = [i for batch in batches[part.start : part.stop] for i in batch]
        real, generated = reference_logps(
            policy,
            [examples[i] for i in positions],
            desc=f"{desc} [{distributed.rank()}]",
            chunk_dir=chunk_dir / f"from-batch-{part.start}",
            **score,
        )
        parts = distributed.gather((positions, real, generated))
        if parts is None:
            return None
        by_position = {i: (r, g) for p in parts for i, r, g in zip(*p, strict=True)}
        ordered = [by_position[i] for i in range(len(examples))]
        return [r for r, _ in ordered], [g for _, g in ordered]

    def _encode_pairs(self, tokenizer: Any, rows: list[dict]) -> tuple[list[dict], int]:
        fmt = self.formatter(tokenizer)
        lengths = (self.cfg.model.max_prompt_length, self.cfg.model.max_length)
        examples, n_identical = [], 0
        for row in rows:
            n_identical += row["identical"]
            if row["identical"] and self.cfg.spin.drop_identical:
                continue
            real, generated = fmt.encode_pair(
                row["prompt"], [row["real"], row["generated"]], *lengths
            )
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
        self, model: ModelRef, refs: ReferenceMix, objective: Objective, stage: str
    ) -> tuple[ModelRef, Artifact]:
        """Train from ``model`` on the pairs of ``refs`` (their reference log-probabilities
        mixed by weight) with a pairwise loss."""
        loss = {
            "name": objective.loss,
            "beta": objective.beta,
            "nll_weight": objective.nll_weight,
            "label_smoothing": objective.label_smoothing,
        }
        trainer = self._trainer_settings(objective.lr, objective.epochs)
        single = len(refs) == 1 and refs[0][1] == 1.0
        reference = refs[0][0].key if single else [[ref.key, weight] for ref, weight in refs]
        spec = {
            "parent": model.key,
            "reference": reference,
            "loss": loss,
            "trainer": self._trainer_key(trainer),
        }
        spec |= self._weights_spec()

        def build(work: Path) -> None:
            args = self._training_arguments(work, trainer)
            policy, tokenizer = self.load_private(model)
            log.info("%s: training with the %s loss", stage, objective.loss)
            history = train_pairs(
                policy,
                tokenizer,
                mixed_reference(refs),
                args,
                loss_name=objective.loss,
                beta=objective.beta,
                label_smoothing=objective.label_smoothing,
                nll_weight=objective.nll_weight,
                resume_from=self._resume_point(work),
                save_to=self._trainer_saves(work),
            )
            tokens = read_json(refs[0][0].path / "stats.json")["tokens"] * objective.epochs
            self._finish_training(work, policy, tokenizer, model, history, tokens)

        artifact = self._artifact("model", spec, build, together=True)
        return ModelRef(artifact.key, str(artifact.path / "model")), artifact

    def _trainer_settings(self, lr: float, epochs: float, **overrides: Any) -> dict[str, Any]:
        """The settings of a training run: not the ones that leave its weights as they are
        (reference batch size, process count and engine, checkpoint interval)."""
        drop = ("ref_batch_size", "world_size", "save_steps", "distributed")
        trainer = section(self.cfg, "trainer", drop=drop)["trainer"]
        return trainer | {"lr": lr, "epochs": epochs} | overrides

    @staticmethod
    def _trainer_key(trainer: dict[str, Any]) -> dict[str, Any]:
        """The settings a trained model's key holds: ``batch_size`` as the global batch
        (examples of one optimizer step over every process and accumulated micro-batch), so
        N processes of batch b, or one accumulating N micro-batches of b, share the model of
        one process of batch N x b: each step trains on the same examples
        (spin/trainer.py), only the rounding differs."""
        step = trainer["batch_size"] * trainer["grad_accumulation"] * distributed.world_size()
        key = trainer | {"batch_size": step, "grad_accumulation": 1}
        if key["group_by_length"]:
            del key["group_by_length"]  # the default, absent from keys made before it existed
        return key

    def _weights_spec(self) -> dict[str, Any]:
        """What a trained model's key adds about which weights train and how: the adapters
        (nothing without LoRA) and, where it changed training, the float32 master weights."""
        return lora_spec(self.cfg) | master_weights_spec(self.cfg)

    @staticmethod
    def _resume_point(work: Path) -> Path | None:
        """The checkpoint a training build resumes from, chosen (and incomplete ones
        deleted) by the main process alone."""
        found = last_checkpoint(work / "checkpoints") if distributed.is_main() else None
        return distributed.broadcast(found)

    def _trainer_saves(self, work: Path) -> Path | None:
        """Where the Trainer itself saves the model: only when FSDP or ZeRO-3 split the
        weights over the processes, which it gathers; otherwise the pipeline saves it."""
        return work / "model" if distributed.shards_weights(self.cfg) else None

    def _finish_training(
        self,
        work: Path,
        policy: Any,
        tokenizer: Any,
        parent: ModelRef,
        history: list[dict],
        tokens: float,
    ) -> None:
        """After every process has trained: the main process merges LoRA adapters and
        saves the model in ``model.dtype`` (trained as float32 masters: spin/precision.py),
        its history and statistics."""
        distributed.barrier()
        if not distributed.is_main():
            return
        if not distributed.shards_weights(self.cfg):
            policy = merge_adapters(policy, parent.location, work / "adapter", self.cfg)
            policy.save_pretrained(work / "model")
            tokenizer.save_pretrained(work / "model")
        cast_saved_model(work / "model", self.cfg.model.dtype)
        write_json(work / "history.json", history)
        write_json(work / "stats.json", {"tokens_trained": int(tokens)})
        shutil.rmtree(work / "checkpoints", ignore_errors=True)

    def _training_arguments(self, work: Path, trainer: dict[str, Any]) -> Any:
        """Arguments of a training build: its checkpoints go into ``work/checkpoints``, where
        a rerun after a kill finds them."""
        return training_arguments(
            str(work / "checkpoints"), **trainer, save_steps=self.cfg.trainer.save_steps
        )

    def evaluate(self, model: ModelRef) -> dict[str, Any]:
        """Score a model on the eval tasks: once per model and scoring settings, shared by
        every job (the start model is scored once for all jobs that start from it). The
        results name the model that was scored (``summary.model``, see :meth:`identity`)."""
        plans = plan_tasks(self.cfg.eval)
        if not plans:
            return {}
        spec = {"model": model.key, "dtype": self.cfg.model.dtype}
        spec |= eval_spec(self.cfg.eval, plans)

        def build(work: Path) -> None:
            prepared = prepare(plans, work)  # fails here, before the model is loaded
            policy, tokenizer = self.load(model)
            results = run_tasks(prepared, policy, tokenizer, self.cfg.eval, work / "by_shots")
            results["summary"]["model"] = self.identity(model)
            write_json(work / "results.json", results)
            shutil.rmtree(work / "by_shots")

        return read_json(self._artifact("eval", spec, build).path / "results.json")

    def _artifact(
        self, kind: str, spec: dict[str, Any], build: Any, together: bool = False
    ) -> Artifact:
        """The artifact of ``spec``, built if missing: by the main process alone, or with
        ``together`` by every process of a distributed launch (spin/distributed.py)."""
        get = distributed.build_together if together else distributed.build_on_main
        artifact = get(self.store, kind, spec, build, self.config_yaml)
        self.tracker.event(event="artifact", kind=kind, key=artifact.key, built=artifact.built)
        return artifact

    # ------------------------------------------------------------------ chain
    def run(self) -> dict[str, Any]:
        """Build what the job's ``baseline`` asks for; log each model; return the report."""
        if self.cfg.baseline.name in ("none", "spin_dpo") and self.given:
            # Read first: a malformed row stops the job before any model work.
            log.info("Iterations %s train on given pairs (spin.given_pairs)", sorted(self.given))
        start, sft_stage = self.start_model()
        start_eval = self.evaluate(start)
        self._log_eval("start", None, start_eval, "SFT")
        self._add_row("SFT", "sft", None, start, start_eval, trained=sft_stage)
        report: dict[str, Any] = {"start": scores(start_eval), "iterations": []}
        name = self.cfg.baseline.name
        if name == "sft_more":
            self.sft_more(start)
        elif name == "dpo":
            self.dpo(start, "DPO", "dpo", None)
        elif name in ("none", "spin_dpo"):
            final = self.chain(start, report)
            if name == "spin_dpo":
                t = self.cfg.iter
                self.dpo(final, f"SPIN iteration {t} + DPO", "spin_dpo", t)
        report["rows"] = self.rows
        return report

    def chain(self, start: ModelRef, report: dict[str, Any]) -> ModelRef:
        """SPIN iterations 0..iter from ``start``; returns the last trained model."""
        model = start
        gens: list[Artifact] = []
        for t in range(self.cfg.iter + 1):
            settings = iteration_settings(self.cfg, t)
            gens.append(self.generations(model, t))
            refs = self.opponent_references(start, model, gens, settings, t)
            objective = Objective(
                loss=self.cfg.loss.name,
                beta=settings.beta,
                nll_weight=self.cfg.loss.nll_weight,
                label_smoothing=self.cfg.loss.label_smoothing,
                lr=settings.lr,
                epochs=settings.epochs,
            )
            trained, model_artifact = self.train(model, refs, objective, f"iter {t}")
            evaluation = self.evaluate(trained)
            row = self._add_row(
                f"SPIN iteration {t}",
                "spin",
                t,
                trained,
                evaluation,
                gen=gens[-1],
                refs=refs,
                trained=model_artifact,
            )
            self._log_iteration(t, gens[-1], refs, model_artifact, row["costs"])
            self._log_eval("eval", t, evaluation, f"SPIN iteration {t}")
            report["iterations"].append(
                {
                    "iteration": t,
                    "model": trained.location,
                    "settings": asdict(settings),
                    "eval": scores(evaluation),
                    "identical_fraction": read_json(gens[-1].path / "stats.json")[
                        "identical_fraction"
                    ],
                }
            )
            model = trained
        return model

    def opponent_references(
        self,
        start: ModelRef,
        model: ModelRef,
        gens: list[Artifact],
        settings: IterationSettings,
        t: int,
    ) -> ReferenceMix:
        """The pairs iteration ``t`` trains on and their reference, by ``opponent.name``."""
        opponent = self.cfg.opponent
        stage = f"iter {t}"
        if opponent.name == "fictitious":
            return [(self.reference(model, gens, stage, draw_seed=opponent.seed + t), 1.0)]
        pair_sets = [gens[-1], gens[-2]] if settings.mix_previous and t > 0 else [gens[-1]]
        ref = self.reference(model, pair_sets, stage)
        if opponent.name != "kl_mixture" or model.key == start.key:
            return [(ref, 1.0)]
        start_ref = self.reference(start, pair_sets, f"{stage}: start model")
        weight = opponent.mixture_weight
        return [(ref, weight), (start_ref, 1.0 - weight)]

    def sft_more(self, start: ModelRef) -> None:
        """The paper's "SFT one more epoch": plain SFT on the same real responses."""
        base = self.cfg.baseline
        lr = base.lr if base.lr is not None else self.cfg.sft.lr
        trained, artifact = self.sft(start, self.splits.train, base.epochs, lr, "sft_more")
        evaluation = self.evaluate(trained)
        self._log_training("sft_more", None, artifact)
        self._log_eval("sft_more", None, evaluation, "SFT + more epochs")
        self._add_row("SFT + more epochs", "sft_more", None, trained, evaluation, trained=artifact)

    def dpo(self, model: ModelRef, label: str, kind: str, t: int | None) -> None:
        """DPO from ``model``: the SPIN loss and trainer on preference pairs."""
        base = self.cfg.baseline
        pairs = self.preferences()
        self.check_prompts(model, [p["prompt"] for p in read_pairs(pairs)], "preference")
        ref = self.reference(model, [pairs], kind)
        objective = Objective(
            loss=base.loss,
            beta=base.beta,
            nll_weight=0.0,
            label_smoothing=0.0,
            lr=base.lr if base.lr is not None else self.cfg.trainer.lr,
            epochs=base.epochs,
        )
        trained, artifact = self.train(model, [(ref, 1.0)], objective, kind)
        evaluation = self.evaluate(trained)
        self._log_training(kind, t, artifact)
        self._log_eval(kind, t, evaluation, label)
        self._add_row(label, kind, t, trained, evaluation, refs=[(ref, 1.0)], trained=artifact)

    # ---------------------------------------------------------------- logging
    def _add_row(
        self,
        label: str,
        kind: str,
        t: int | None,
        model: ModelRef,
        evaluation: dict[str, Any],
        gen: Artifact | None = None,
        refs: ReferenceMix = (),
        trained: Artifact | None = None,
    ) -> dict[str, Any]:
        """One scored model for the report: scores (with their standard errors and
        per-document values, for paired comparisons), the cost of the stages that made it,
        and its training curves; returned too, so the iteration's log reuses its costs."""
        summary = evaluation["summary"] if evaluation else None
        gen_stats = read_json(gen.path / "stats.json") if gen else {}
        ref_seconds = [read_json(r.path / "stats.json")["seconds"] for r, _ in refs]
        history = read_json(trained.path / "history.json") if trained else []
        final = next((e for e in history if "train_runtime" in e), {})
        trained_stats = trained.path / "stats.json" if trained else None
        row = {
            "label": label,
            "kind": kind,
            "iteration": t,
            "model_key": model.key,
            "scores": scores(evaluation),
            "stderr": flat_stderr(summary) if summary else {},
            "items": flat_items(summary) if summary else {},
            "costs": {
                "generation_s": gen_stats.get("seconds"),
                "reference_s": sum(ref_seconds) if ref_seconds else None,
                "train_s": final.get("train_runtime"),
                "eval_s": evaluation["summary"].get("seconds") if evaluation else None,
                "tokens_generated": gen_stats.get("generated_tokens"),
                "tokens_trained": read_json(trained_stats)["tokens_trained"]
                if trained_stats and trained_stats.is_file()
                else None,
            },
            "curves": curves(history),
        }
        self.rows.append(row)
        return row

    def _log_training(self, prefix: str, t: int | None, trained: Artifact) -> None:
        """A training run's curves: ``train/*`` on the cumulative step axis for SPIN
        iterations, ``<baseline>/train/*`` on their own step for baselines."""
        history = read_json(trained.path / "history.json")
        axes = {} if t is None else {"iteration": t}
        for entry in curves(history):
            step = entry.pop("step")
            if prefix == "train":
                row = {f"train/{k}": v for k, v in entry.items()}
                row["train/global_step"] = self.global_step + step
            else:
                row = {f"{prefix}/train/{k}": v for k, v in entry.items()}
                row[f"{prefix}/train/step"] = step
            self.tracker.log({**axes, **row})
        if prefix == "train":
            self.global_step += max((e.get("step", 0) for e in history), default=0)

    def _log_iteration(
        self,
        t: int,
        gen: Artifact,
        refs: ReferenceMix,
        trained: Artifact,
        costs: dict[str, Any],
    ) -> None:
        self._log_training("train", t, trained)
        gen_stats = read_json(gen.path / "stats.json")
        ref_stats = read_json(refs[0][0].path / "stats.json")
        history = read_json(trained.path / "history.json")
        final = next((e for e in history if "train_runtime" in e), {})
        self.tracker.log(
            {
                "iteration": t,
                "generation/identical_fraction": gen_stats["identical_fraction"],
                "generation/n": gen_stats["n"],
                "reference/n_pairs": ref_stats["n_pairs"],
                "reference/n_identical": ref_stats["n_identical"],
                "time/generation_s": costs["generation_s"],
                "time/reference_s": costs["reference_s"],
                "time/train_s": costs["train_s"],
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

    def _log_eval(self, prefix: str, t: int | None, result: dict[str, Any], label: str) -> None:
        """``<prefix>/<task>/<metric>`` and ``<prefix>/average`` per model, and one table on the
        run with every model scored so far side by side (its last version holds them all)."""
        if not result:
            return
        values = scores(result)
        row = {f"{prefix}/{name}": value for name, value in values.items()}
        self.tracker.log(row if t is None else {"iteration": t, **row})
        self._eval_rows.append([label, *values.values()])
        axes = {} if t is None else {"iteration": t}
        self.tracker.log_table("eval/summary", ["model", *values], self._eval_rows, **axes)


def scores(result: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` -> value and ``average`` of an evaluation result."""
    return flat_scores(result["summary"]) if result else {}


def curves(history: list[dict]) -> list[dict[str, Any]]:
    """The logged training steps of a Trainer history: step, loss and the SPIN metrics."""
    return [
        {"step": e["step"], **{k: v for k, v in e.items() if k not in ("step", "epoch")}}
        for e in history
        if "loss" in e
    ]
