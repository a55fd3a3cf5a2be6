"""device_report.json and device_report.md from what check.sh and the parts left behind.

check.sh appends ``name<TAB>exit code<TAB>seconds<TAB>limit`` to ``OUT/details/status.tsv``
for the install and each part it started; a part that ran to its end wrote
``OUT/details/parts/<name>.json``, and each part's output is in ``OUT/details/logs``. A
part with no result file timed out, crashed, or was never started (not selected, or the
check's time budget was spent), and the report says which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from check import PARTS, result_path

TIMED_OUT = (124, 137)  # timeout's exit codes: the limit, or the kill after it
NOT_STARTED = {
    -1: ("skipped", "not among CHECK_PARTS"),
    -2: ("not run", "the check's time budget (CHECK_BUDGET_S) was spent before it"),
}


def statuses(out: Path) -> dict[str, tuple[int, float, int]]:
    """What check.sh recorded for each step it started."""
    path = out / "details" / "status.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()] if path.is_file() else []
    return {name: (int(rc), float(seconds), int(limit)) for name, rc, seconds, limit in rows}


def log_tail(out: Path, name: str) -> str:
    path = out / "details" / "logs" / f"{name}.log"
    return path.read_text(errors="replace")[-1500:] if path.is_file() else ""


def outcome(out: Path, name: str, started: dict[str, tuple[int, float, int]]) -> dict[str, Any]:
    """A part's result, or why there is none."""
    path = result_path(out, name)
    if path.is_file():
        return json.loads(path.read_text())
    rc, seconds, limit = started.get(name, (-2, 0.0, 0))
    if rc in NOT_STARTED:
        status, why = NOT_STARTED[rc]
        return {"status": status, "why": why}
    if rc in TIMED_OUT:
        why = f"timed out after its limit of {limit} s"
    else:
        why = f"its process exited with {rc} and no result: {log_tail(out, name)}"
    return {"status": "failed", "why": why, "seconds": seconds}


def headline(result: dict[str, Any]) -> str:
    """The figures of a part in one line (or why it failed or was skipped)."""
    if result["status"] != "passed":
        return str(result.get("why") or "")
    if "ratio_pairs_per_s" in result:
        speed, mfu, memory = result["pairs_per_s"], result["mfu"], result["peak_gpu_gib"]
        parts = [
            f"{name} {speed[name]:.2f} pairs/s, MFU {mfu[name]:.1%}"
            + (f", {memory[name]:.1f} GiB" if memory[name] is not None else "")
            for name in speed
        ]
        ratios = ", ".join(f"SPIN/{p} {r:.2f}x" for p, r in result["ratio_pairs_per_s"].items())
        return f"{result['architecture']}: {'; '.join(parts)}; {ratios}"
    if "ratio_tokens_per_s" in result:
        speed = result["tokens_per_s"]
        return (
            f"SPIN {speed['spin']:.0f} vs generate {speed['hf-generate']:.0f} tokens/s: "
            f"{result['ratio_tokens_per_s']:.2f}x; identical {result['identical_completions']}"
        )
    if "ratio_time_project_to_hflm" in result:
        speed = result["tokens_per_s"]
        return (
            f"project {speed['project']:.0f} vs lm-eval HF {speed['hflm']:.0f} tokens/s; "
            f"time ratio {result['ratio_time_project_to_hflm']:.2f}"
        )
    if "movement_ratio_bf16_to_fp32" in result:
        return f"bf16/fp32 weight movement {result['movement_ratio_bf16_to_fp32']:.2f} (>= 0.5)"
    if "bfloat16" in result:
        return ", ".join(
            f"{dtype} max |diff| {result[dtype]['max_abs_diff']:.2e}"
            for dtype in ("float32", "bfloat16")
        )
    if "first_step_max_abs_reward" in result:
        return f"first-step rewards 0 (largest |reward| {result['first_step_max_abs_reward']:.1e})"
    return str(result.get("summary") or result.get("gpu") or "")


def write_report(out: Path, cpu: bool) -> bool:
    """Write both reports into ``out``; whether the install and every part that ran passed
    (or was skipped)."""
    started = statuses(out)
    parts = {part.name: outcome(out, part.name, started) for part in PARTS}
    environment = parts["environment"]
    install = started.get("install")
    passed = all(r["status"] != "failed" for r in parts.values()) and (
        install is None or install[0] == 0
    )
    report = {
        "mode": "cpu (toy sizes)" if cpu else "gpu",
        "passed": passed,
        "install": None if install is None else {"exit": install[0], "seconds": install[1]},
        "environment": environment,
        "parts": parts,
    }
    (out / "device_report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "device_report.md").write_text(markdown(report, install))
    return passed


def markdown(report: dict[str, Any], install: tuple[int, float, int] | None) -> str:
    env = report["environment"]
    lines = [
        f"# Device check ({report['mode']}): {'passed' if report['passed'] else 'FAILED'}",
        "",
        f"- GPU: {env.get('gpu')} ({env.get('gpu_memory_gib')} GiB), driver {env.get('driver')}, "
        f"CUDA {env.get('cuda')}",
        f"- Python {env.get('python')}, torch {env.get('torch')}, transformers "
        f"{env.get('transformers')}, TRL {env.get('trl')}, DeepSpeed {env.get('deepspeed')}",
        f"- commit {env.get('commit')}",
        "- kit install: "
        + ("not done (the environment as it is)" if install is None else f"exit {install[0]}"),
        "",
        "| part | status | seconds | result |",
        "|---|---|---|---|",
    ]
    for name, result in report["parts"].items():
        text = headline(result).replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {result['status']} | {result.get('seconds', '')} | {text} |")
    return "\n".join(lines) + "\n"
