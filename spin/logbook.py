"""What a job records about each model it scores: the report's rows (scores with standard
errors and per-document values, the costs of the stages that made the model, its training
curves) and the metrics, tables and samples it logs to the tracker (W&B and the job's
metrics.jsonl). The chain and the baselines hand it each model once it is scored."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from evaluation import flat_items, flat_stderr
from spin.artifacts import Artifact, build_record, read_json
from spin.config import IterationSettings
from spin.pairs import ReferenceMix, read_pairs
from spin.stages.loading import ModelRef
from spin.stages.scoring import BUILD_KEY, scores
from spin.tracking import Tracker


@dataclass(frozen=True)
class Scored:
    """A model the job scored and the stages that made it: what its report row and its
    logs are read from."""

    label: str  # its name in the report's table
    kind: str  # sft, spin, sft_more, dpo or spin_dpo
    iteration: int | None  # the SPIN iteration it comes from, if any
    model: ModelRef
    evaluation: dict[str, Any]  # its scores ({} with eval=none)
    trained: Artifact | None = None  # the training stage that made it
    gen: Artifact | None = None  # the pairs it trained on, when a SPIN iteration made them
    refs: ReferenceMix = ()  # their reference passes


class Logbook:
    """The rows and logs of one job, in the order its models were scored."""

    def __init__(self, tracker: Tracker, n_samples: int) -> None:
        self.tracker = tracker
        self.n_samples = n_samples  # sample generations logged per iteration
        self.start_scores: dict[str, float] = {}
        self.iterations: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.global_step = 0  # training steps of the SPIN iterations logged so far
        self._eval_rows: list[list[Any]] = []

    def report(self) -> dict[str, Any]:
        """The job's report: the start model's scores, each iteration, every row."""
        return {"start": self.start_scores, "iterations": self.iterations, "rows": self.rows}

    def record_start(
        self, model: ModelRef, evaluation: dict[str, Any], trained: Artifact | None
    ) -> None:
        """The start model (with the SFT stage's costs when it made it): the report's SFT
        row."""
        self.log_eval("start", None, evaluation, "SFT")
        self.add_row(Scored("SFT", "sft", None, model, evaluation, trained))
        self.start_scores = scores(evaluation)

    def record_iteration(
        self,
        t: int,
        settings: IterationSettings,
        model: ModelRef,
        evaluation: dict[str, Any],
        gen: Artifact,
        refs: ReferenceMix,
        trained: Artifact,
    ) -> None:
        """SPIN iteration ``t``: its row, its training curves on the chain's step axis, its
        pair statistics, stage times and sample generations, and its scores."""
        label = f"SPIN iteration {t}"
        row = self.add_row(Scored(label, "spin", t, model, evaluation, trained, gen, refs))
        self.log_training("train", t, trained)
        self._log_stages(t, gen, refs, trained, row["costs"])
        self.log_eval("eval", t, evaluation, label)
        if self.start_scores:
            # Again at every iteration: the score panels' reference lines (dashboard.py).
            start = {f"start/{name}": value for name, value in self.start_scores.items()}
            self.tracker.log({"iteration": t, **start})
        self.iterations.append(
            {
                "iteration": t,
                "model": model.location,
                "settings": asdict(settings),
                "eval": scores(evaluation),
                "identical_fraction": read_json(gen.path / "stats.json")["identical_fraction"],
            }
        )

    def record_baseline(self, scored: Scored, last_iteration: int) -> None:
        """A baseline's model: its curves under ``<kind>/train/*``, scores, row. Its scores
        (``<kind>/<task>/<metric>``, ``<kind>/average``) carry the iteration axis of the
        dashboard's score panels: SPIN + DPO's the iteration it follows; a model made from
        the start model (SFT + more epochs, DPO) logs them again at every iteration
        0..``last_iteration`` (``iter``), a level beside the chains, as report.py draws it."""
        self.log_training(scored.kind, scored.iteration, scored.trained)
        self.log_eval(scored.kind, scored.iteration, scored.evaluation, scored.label)
        if scored.iteration is None and scored.evaluation:
            level = {f"{scored.kind}/{k}": v for k, v in scores(scored.evaluation).items()}
            for t in range(last_iteration + 1):
                self.tracker.log({"iteration": t, **level})
        self.add_row(scored)

    def add_row(self, scored: Scored) -> dict[str, Any]:
        """One scored model for the report: scores (with their standard errors and
        per-document values, for paired comparisons), the cost of the stages that made it,
        and its training curves; returned too, so the iteration's log reuses its costs."""
        summary = scored.evaluation["summary"] if scored.evaluation else None
        history = read_json(scored.trained.path / "history.json") if scored.trained else []
        row = {
            "label": scored.label,
            "kind": scored.kind,
            "iteration": scored.iteration,
            "model_key": scored.model.key,
            "scores": scores(scored.evaluation),
            "stderr": flat_stderr(summary) if summary else {},
            "items": flat_items(summary) if summary else {},
            "costs": costs(scored, history),
            "curves": curves(history),
        }
        self.rows.append(row)
        return row

    def log_training(self, prefix: str, t: int | None, trained: Artifact) -> None:
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

    def log_eval(self, prefix: str, t: int | None, result: dict[str, Any], label: str) -> None:
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

    def _log_stages(
        self,
        t: int,
        gen: Artifact,
        refs: ReferenceMix,
        trained: Artifact,
        costs: dict[str, Any],
    ) -> None:
        """Iteration ``t``'s pair statistics, stage times, peak memory and throughputs, and a
        table of sample generations."""
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
                "memory/generation_peak_gb": costs["generation_peak_gb"],
                "memory/reference_peak_gb": costs["reference_peak_gb"],
                "memory/train_peak_gb": costs["train_peak_gb"],
                "memory/eval_peak_gb": costs["eval_peak_gb"],
                "throughput/generation_tokens_per_s": gen_stats["tokens_per_second"],
                "throughput/reference_tokens_per_s": ref_stats["tokens"] / ref_stats["seconds"]
                if ref_stats["seconds"]
                else None,
                "throughput/train_pairs_per_s": final.get("train_samples_per_second"),
            }
        )
        samples = read_pairs(gen)[: self.n_samples]
        self.tracker.log_table(
            "generation/samples",
            ["iteration", "prompt", "real", "generated", "identical"],
            [[t, s["prompt"], s["real"], s["generated"], s["identical"]] for s in samples],
            iteration=t,
        )


def costs(scored: Scored, history: list[dict]) -> dict[str, Any]:
    """The seconds, tokens and peak resident memory of the stages that made a model (None
    where a stage did not run for it, or, like given pairs, has no cost of its own)."""
    gen_stats = read_json(scored.gen.path / "stats.json") if scored.gen else {}
    # None where no model scored the pairs (a reference-free loss's encoded pairs).
    ref_seconds = [read_json(r.path / "stats.json")["seconds"] for r, _ in scored.refs]
    ref_peaks = [build_record(r).get("peak_memory_gb") for r, _ in scored.refs]
    final = next((e for e in history if "train_runtime" in e), {})
    trained_stats = scored.trained.path / "stats.json" if scored.trained else None
    evaluation = scored.evaluation
    return {
        "generation_s": gen_stats.get("seconds"),
        "reference_s": sum(ref_seconds) if ref_seconds and None not in ref_seconds else None,
        "train_s": final.get("train_runtime"),
        "eval_s": evaluation["summary"].get("seconds") if evaluation else None,
        "tokens_generated": gen_stats.get("generated_tokens"),
        "tokens_trained": read_json(trained_stats)["tokens_trained"]
        if trained_stats and trained_stats.is_file()
        else None,
        "generation_peak_gb": build_record(scored.gen).get("peak_memory_gb"),
        "reference_peak_gb": max(ref_peaks) if ref_peaks and None not in ref_peaks else None,
        "train_peak_gb": build_record(scored.trained).get("peak_memory_gb"),
        "eval_peak_gb": evaluation.get(BUILD_KEY, {}).get("peak_memory_gb") if evaluation else None,
    }


def curves(history: list[dict]) -> list[dict[str, Any]]:
    """The logged training steps of a Trainer history: step, loss and the SPIN metrics."""
    return [
        {"step": e["step"], **{k: v for k, v in e.items() if k not in ("step", "epoch")}}
        for e in history
        if "loss" in e
    ]
