"""Scoring the SPIN authors' released models beside the paper's table (``released.py``).

``released.models`` (conf/released.yaml) maps rows of the paper's table (``sft``,
``spin_iter0`` .. ``spin_iter3``, ``dpo``) to the models released for them: hub ids at a
revision, or local copies. Each is scored as ``evaluate.py model.path=<path>
model.revision=<revision>`` scores it, through the same checks, scoring code and artifact
store, so a model scored by either command is scored once. Every model is checked before
any work; the scores measured here, the paper's and their differences go to ``table.md`` and
``table.csv`` in the job's folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spin.errors import ConfigError
from spin.job import start_job
from spin.models import MODEL_FILES, download_command, is_hub_id, location_problem
from spin.planning import HARDWARE, Plan, build_plan
from spin.planning.formatting import fmt_count, fmt_flops, fmt_int, fmt_seconds
from spin.planning.stages import Stage, stage_seconds
from spin.reporting.paper import (
    Measured,
    comparison_csv,
    comparison_markdown,
    load_paper,
    paper_label,
)
from spin.stages.scoring import scores
from spin.standalone import describe, score_with

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One model to score and the paper row it is read against."""

    row: str
    path: str
    revision: str | None

    @property
    def key(self) -> str:
        """The config key that says where the model is."""
        return f"released.models.{self.row}.path"

    @property
    def name(self) -> str:
        """The model as the table names it: path or hub id, at its revision if pinned."""
        pinned = self.revision and not Path(self.path).is_dir()
        return f"{self.path}@{self.revision}" if pinned else self.path


def entries(cfg: DictConfig) -> list[Entry]:
    """The configured models in the paper's row order; a row the paper lacks is refused."""
    rows = list(load_paper())
    models = cfg.released.models
    unknown = sorted(set(models) - set(rows))
    if unknown:
        raise ConfigError(
            f"released.models.{unknown[0]} is not a row of the paper's table "
            f"(spin/reporting/paper_table.csv); expected one of {rows}"
        )
    if not models:
        raise ConfigError(f"released.models is empty; expected entries for rows of {rows}")
    chosen = [row for row in rows if row in models]
    return [Entry(row, str(models[row].path), models[row].revision) for row in chosen]


# The paper's DPO row's model, as released.models.dpo names it by default.
DPO_MODEL = "alignment-handbook/zephyr-7b-dpo-full"


def provenance_notes(chosen: list[Entry]) -> list[str]:
    """What the table's reader must know of a model's provenance: the DPO row read from the
    hub at no pinned revision may not be the model the paper scored."""
    dpo = next((e for e in chosen if e.row == "dpo"), None)
    if dpo is None or dpo.revision or not is_hub_id(dpo.path) or Path(dpo.path).is_dir():
        return []
    said = f"DPO: {dpo.path} is read from the hub's main branch as it is now (no revision pinned)"
    if dpo.path == DPO_MODEL:
        said += (
            ". The alignment-handbook changed its DPO recipe on 2024-01-10 (f0ffa0d: beta 0.01, "
            "AdamW, cosine, 1 epoch) and, by the SPIN authors' README, updated its SFT model "
            "after their experiments, so these weights may be a retrain, not the model the "
            "paper scored; no revision from the paper's time is known (docs/paper_fidelity.md)."
        )
    else:
        said += ", which may differ from the model the paper scored."
    return [f"{said} released.models.dpo.revision=<commit> pins one."]


def entry_config(cfg: DictConfig, entry: Entry) -> DictConfig:
    """The job's config as ``evaluate.py`` gets it for ``entry``'s model."""
    return OmegaConf.merge(cfg, {"model": {"path": entry.path, "revision": entry.revision}})


def check_available(chosen: list[Entry]) -> None:
    """Stop before any work unless every model can be loaded here, naming each one that
    cannot and how to get it."""
    missing = [(e, problem) for e in chosen if (problem := location_problem(e.path, e.revision))]
    if not missing:
        return
    lines = []
    for entry, problem in missing:
        line = f"  {entry.key}={entry.path!r} {problem}"
        if is_hub_id(entry.path):
            line += f"; fetch: `{download_command(entry.path, entry.revision)}`"
        lines.append(line)
    raise ConfigError(
        f"{len(missing)} of the {len(chosen)} models cannot be loaded here, so nothing was "
        "scored:\n" + "\n".join(lines) + "\nRun the fetch commands where the hub is reachable "
        "(they fill the Hugging Face cache, HF_HOME; copy it here), or point each entry at a "
        f"local copy with released.models.<row>.path=DIR ({MODEL_FILES})."
    )


def run(cfg: DictConfig, job_dir: Path, job_name: str) -> list[str]:
    """Score every configured model and write table.md and table.csv into ``job_dir``; each
    model's identity (path or hub id, revision, key) is logged, in the W&B summary under
    ``released/<row>`` with its scores, and in the returned lines, one per model."""
    chosen = entries(cfg)
    check_available(chosen)
    tracker = start_job(cfg, job_dir, job_name, "released")
    measured, scored = [], []
    summary: dict[str, Any] = {}
    try:
        for entry in chosen:
            identity, result = score_with(entry_config(cfg, entry), tracker)
            values = scores(result)
            scored.append(f"{paper_label(entry.row)}: {describe(identity)}")
            log.info("Scored %s", scored[-1])
            tracker.log({f"released/{entry.row}/{k}": v for k, v in values.items()})
            summary[f"released/{entry.row}"] = {"model": identity, **values}
            measured.append(Measured(entry.row, entry.name, values))
        tracker.summary(summary)
    finally:
        tracker.finish()
    (job_dir / "table.md").write_text(comparison_markdown(measured, provenance_notes(chosen)))
    (job_dir / "table.csv").write_text(comparison_csv(measured))
    return scored


def eval_stage(plan: Plan) -> Stage:
    """The scoring of one model in a plan: its start model's evaluation."""
    return next(s for s in plan.stages if s.name == "eval")


def dry_run(cfg: DictConfig) -> str:
    """The models ``run`` would score, whether each can be loaded here, and the estimated
    cost of scoring them (spin/planning/evalcost.py, as train.py's dry run)."""
    chosen = entries(cfg)
    lines = [f"Models to score (released.models), eval={cfg.eval.name}:"]
    for entry in chosen:
        problem = location_problem(entry.path, entry.revision)
        status = "can be loaded" if problem is None else f"CANNOT be loaded: {problem}"
        lines.append(f"  {entry.row:<11} {entry.name}  [{status}]")
    plan = build_plan(cfg)
    if not plan.tasks:
        return "\n".join([*lines, "", "Evaluation: none (eval.tasks is empty)."])
    stage = eval_stage(plan)
    lines += ["", "Evaluation per model (estimates):"]
    for task in plan.tasks:
        lines.append(
            f"  {task.name:<16} {task.num_fewshot:>2}-shot  {fmt_int(task.docs):>7} docs  "
            f"~{fmt_count(task.tokens):>7} tokens ({task.source})"
        )
    lines.append(
        f"  per model: {fmt_int(stage.items)} docs, ~{fmt_count(stage.tokens)} tokens, "
        f"{fmt_flops(stage.flops)} FLOPs ({fmt_count(plan.n_params.value)} parameters)"
    )
    lines += ["", f"Time for all {len(chosen)} models ({plan.devices} device(s), estimates):"]
    for hardware in HARDWARE.values():
        seconds = stage_seconds(
            stage.flops, stage.decode_steps, hardware, plan.devices, plan.weight_bytes
        )
        total = None if seconds is None else seconds * len(chosen)
        lines.append(f"  {hardware.name:<5} {fmt_seconds(total):>10}  ({hardware.description})")
    return "\n".join(lines)
