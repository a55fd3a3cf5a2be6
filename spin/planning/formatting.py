"""The plan as the text ``dry_run=true`` prints."""

from __future__ import annotations

from typing import Any

from spin.planning.hardware import HARDWARE, HOUR, PAPER_HARDWARE, GiB, Hardware
from spin.planning.memory import USABLE, Estimate, MemoryPlan
from spin.planning.stages import Plan, Stage, stage_seconds


def fmt_count(value: float | None) -> str:
    """A size in three significant digits with a suffix (38.4M); below 10,000 in full."""
    if value is None:
        return "unknown"
    for size, suffix, start in (
        (1e12, "T", 1e12),
        (1e9, "B", 1e9),
        (1e6, "M", 1e6),
        (1e3, "k", 1e4),
    ):
        if abs(value) >= start:
            return f"{value / size:.3g}{suffix}"
    return f"{value:,.0f}"


def fmt_flops(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2e}"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value < 90:
        return f"{value:.1f} s"
    if value < 90 * 60:
        return f"{value / 60:.1f} min"
    if value < 72 * HOUR:
        return f"{value / HOUR:.2f} h"
    return f"{value / (24 * HOUR):,.1f} d"


def total_cell(stages: list[Stage], attr: str, fmt: Any) -> str:
    """A column's sum over ``stages``; "+?" marks a sum that leaves unknown stages out."""
    values = [getattr(s, attr) for s in stages]
    known = [v for v in values if v is not None]
    if not known:
        return "unknown"
    return fmt(sum(known)) + (" +?" if len(known) < len(values) else "")


def plan_seconds(plan: Plan, hardware: Hardware) -> float | None:
    """The plan's total time on other hardware (None when some stage is unknown)."""
    times = [
        stage_seconds(s.flops, s.decode_steps, hardware, plan.devices, plan.weight_bytes)
        for s in plan.stages
    ]
    return None if any(t is None for t in times) else sum(times)


COLUMNS = (
    ("iter", 5),
    ("stage", 16),
    ("model", 16),
    ("items", 17),
    ("tokens", 8),
    ("epochs", 6),
    ("steps", 7),
    ("FLOPs", 9),
    ("time", 9),
    ("paper", 9),
)


def _row(cells: list[str]) -> str:
    return "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w)
        for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    ).rstrip()


def _stage_row(stage: Stage) -> str:
    iteration = "-" if stage.iteration is None else str(stage.iteration)
    items = "unknown" if stage.items is None else f"{stage.items:,} {stage.unit}"
    return _row(
        [
            iteration,
            stage.name,
            stage.model,
            items,
            fmt_count(stage.tokens),
            f"{stage.epochs:g}",
            "-" if stage.steps is None else f"{stage.steps:,}",
            fmt_flops(stage.flops),
            fmt_seconds(stage.seconds),
            "" if stage.paper_seconds is None else fmt_seconds(stage.paper_seconds),
        ]
    )


def _total_row(label: str, stages: list[Stage]) -> str:
    paper = [s.paper_seconds for s in stages if s.paper_seconds is not None]
    cells = ["", label, "", "", "", "", ""]
    cells.append(total_cell(stages, "flops", fmt_flops))
    cells.append(total_cell(stages, "seconds", fmt_seconds))
    cells.append(fmt_seconds(sum(paper)) if paper else "")
    return _row(cells)


def _header(plan: Plan) -> list[str]:
    hw = plan.hardware
    n = plan.n_params
    params = fmt_count(n.value)
    return [
        f"Dry run of {plan.name}: nothing is loaded, generated or trained.",
        f"  model     {plan.model}: {params} parameters ({n.source})",
        f"  data      {fmt_int(plan.n_train.value)} train prompts ({plan.n_train.source})",
        f"  builds    {plan.chain}",
        f"  batch     {plan.global_batch} pairs per optimizer step (trainer.batch_size x "
        f"grad_accumulation x world_size)",
        f"  hardware  {plan.devices} x {hw.name}: {hw.description}, {hw.peak_flops / 1e12:g} "
        f"TFLOP/s peak at {hw.utilisation:.0%} = {hw.sustained_flops / 1e12:.3g} TFLOP/s "
        f"sustained, {hw.bandwidth / 1e9:,.0f} GB/s memory",
    ]


def fmt_int(value: float | None) -> str:
    return "unknown" if value is None else f"{int(value):,}"


def _table(plan: Plan) -> list[str]:
    lines = [_row([name for name, _ in COLUMNS]), _row(["-" * w for _, w in COLUMNS])]
    for stage in plan.stages:
        lines.append(_stage_row(stage))
        if stage.iteration is not None and stage is plan.stages_of(stage.iteration)[-1]:
            lines.append(
                _total_row(f"iteration {stage.iteration}", plan.stages_of(stage.iteration))
            )
    lines.append(_row(["-" * w for _, w in COLUMNS]))
    lines.append(_total_row("total", plan.stages))
    return lines


def _task_lines(plan: Plan) -> list[str]:
    if not plan.tasks:
        return ["Evaluation: no lm-eval task (eval.tasks is empty)."]
    lines = ["Evaluation per model (estimates):"]
    for t in plan.tasks:
        gen = f", <= {t.generated_tokens} generated tokens/doc" if t.generated_tokens else ""
        lines.append(
            f"  {t.name:<16} {t.num_fewshot:>2}-shot  {fmt_int(t.docs):>7} docs  "
            f"~{fmt_count(t.tokens):>7} tokens{gen} ({t.source})"
        )
    return lines


def _hardware_lines(plan: Plan) -> list[str]:
    lines = [f"Total time on other hardware ({plan.devices} device(s), same assumptions):"]
    for hw in HARDWARE.values():
        lines.append(
            f"  {hw.name:<5} {fmt_seconds(plan_seconds(plan, hw)):>10}  ({hw.description}: "
            f"{hw.peak_flops / 1e12:g} TFLOP/s peak at {hw.utilisation:.0%}, "
            f"{hw.bandwidth / 1e9:,.0f} GB/s)"
        )
    return lines


# Memory columns: label and the estimate's parts they add up.
MEMORY_COLUMNS = (
    ("weights", ("weights",)),
    ("grads", ("gradients",)),
    ("optim", ("optimizer",)),
    ("activ", ("activations", "working")),
    ("logits", ("logits",)),
    ("other", ("kv_cache", "gathered")),
)


def fmt_gib(value: float | None) -> str:
    return "-" if not value else f"{value / GiB:.1f}"


def _memory_row(label: str, estimate: Estimate) -> str:
    cells = [fmt_gib(sum(estimate.parts.get(k, 0.0) for k in keys)) for _, keys in MEMORY_COLUMNS]
    fits = "yes" if estimate.fits else "NO"
    numbers = "".join(f"{c:>8}" for c in [*cells, fmt_gib(estimate.peak)])
    return f"  {label:<12}{numbers}  {fits:<4}  {estimate.setting}"


def _memory_lines(memory: MemoryPlan | None) -> list[str]:
    """Per-device peaks of each kind of stage and the training setups tried."""
    if memory is None:
        return ["Memory: unknown (set model.n_params, or model.path to a local checkpoint)."]
    hw, arch = memory.hardware, memory.architecture
    header = "".join(f"{name:>8}" for name, _ in MEMORY_COLUMNS) + f"{'peak':>8}"
    lines = [
        f"Memory per device (estimates, GiB; {memory.devices} x {hw.name} with "
        f"{hw.memory / GiB:g} GiB, {USABLE * hw.memory / GiB:.1f} usable; tensors each stage "
        "holds at its peak, sequences at their longest; assumptions in "
        "spin/planning/memory.py):",
        f"  model: {fmt_count(memory.n_params)} parameters; {arch.layers} layers, hidden "
        f"{arch.hidden:,}, key/value width {arch.kv_width:,}, MLP {arch.intermediate:,}, "
        f"vocabulary {arch.vocab:,} ({arch.source})",
        f"  {'stage':<12}{header}  fits  setting",
    ]
    lines += [_memory_row(e.stage, e) for e in memory.stages]
    if len(memory.options) > 1:
        lines.append("  training setups tried, in order, until one fits:")
        for option in memory.options[1:]:
            lines.append(_memory_row("train", option.estimate) + f"  [{option.overrides}]")
    lines.append(f"  {memory.recommendation}")
    lines += [f"  note: {note}" for note in memory.notes]
    return lines


def format_plan(plan: Plan) -> str:
    """The plan as the text ``train.py dry_run=true`` prints."""
    lines = [*_header(plan), "", *_table(plan), "", *_task_lines(plan)]
    lines += ["", *_hardware_lines(plan)]
    lines += ["", *_memory_lines(plan.memory)]
    if any(s.paper_seconds is not None for s in plan.stages):
        lines += [
            "",
            f"paper: the SPIN paper's reported cost on {PAPER_HARDWARE} (zephyr-7b, 50k "
            "prompts, t-1 mixing); its training also runs the reference model every step.",
        ]
    lines += ["", "Assumptions:", *(f"  - {note}" for note in plan.notes)]
    return "\n".join(lines)
