"""The parts of the device check, one function each, run one at a time by check.sh.

``check.sh`` starts ``check.py part NAME OUT`` for every part that ``check.py list`` names,
each in its own process under its own time limit, so a part that fails, hangs or crashes
the interpreter costs only itself; ``check.py report OUT`` then writes
``device_report.json`` and ``device_report.md`` from what the parts left in
``OUT/details``.
With ``--cpu`` every part runs at toy sizes on the CPU (what the default test run checks);
the parts that need CUDA say so and are skipped.

This module imports nothing heavy at the top: listing the parts and skipping one that
cannot run here must not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1]), str(HERE.parents[1] / "tests")]
# ruff: noqa: E402  (the import below needs the path above)
from part_context import Run, Skip


@dataclass(frozen=True)
class Part:
    """A part: where its function lives, its time limits (GPU, CPU) in seconds, and whether
    it needs CUDA (then ``--cpu`` skips it without starting it)."""

    name: str
    module: str
    gpu_s: int
    cpu_s: int
    cuda_only: bool = False


# In order of value: when the whole check's budget runs out, the last ones are not run.
PARTS = (
    Part("environment", "correctness", 60, 30),
    Part("packed_logps", "correctness", 90, 60),
    Part("precision", "correctness", 150, 90),
    Part("resume", "correctness", 120, 90),
    Part("gpu_tests", "correctness", 120, 30),
    Part("train_360m", "speed", 150, 90),
    Part("zero3", "scaleout", 150, 60, cuda_only=True),
    Part("fsdp", "scaleout", 120, 60, cuda_only=True),
    Part("lora", "scaleout", 90, 60),
    Part("train_1.7b", "speed", 150, 90, cuda_only=True),
    Part("generation", "speed", 90, 60),
    Part("scoring", "speed", 90, 60),
    Part("qlora", "scaleout", 90, 60, cuda_only=True),
    Part("vllm", "scaleout", 90, 60, cuda_only=True),
    Part("train_7b", "speed", 150, 60, cuda_only=True),
)
BY_NAME = {part.name: part for part in PARTS}


def result_path(out: Path, name: str) -> Path:
    """Where part ``name`` leaves its result (``out/details``, the report's sources)."""
    return out / "details" / "parts" / f"{name}.json"


def run_part(name: str, out: Path, toy: bool) -> dict[str, Any]:
    """Run part ``name`` and store its outcome: ``passed`` or ``failed`` (with ``why``)
    from the part's own verdict, ``skipped`` with the reason, or ``failed`` with the error
    it raised."""
    part = BY_NAME[name]
    started = time.perf_counter()
    try:
        if toy and part.cuda_only:
            raise Skip("needs a CUDA GPU")
        function = getattr(importlib.import_module(part.module), name.replace(".", "_"))
        outcome = function(Run(out, toy, name))
        outcome = {"status": "passed" if outcome.pop("ok") else "failed", **outcome}
    except Skip as skip:
        outcome = {"status": "skipped", "why": str(skip)}
    except Exception as err:  # a part's failure is its result; the others still run
        outcome = {
            "status": "failed",
            "why": f"{type(err).__name__}: {err}"[:2000],
            "traceback": traceback.format_exc()[-4000:],
        }
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    path = result_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outcome, indent=1, default=str) + "\n")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the parts and their time limits, one a line")
    part = commands.add_parser("part", help="run one part")
    part.add_argument("name", choices=list(BY_NAME))
    report = commands.add_parser("report", help="write device_report.json and .md")
    for sub in (part, report):
        sub.add_argument("out", type=Path, help="the report folder")
    for sub in (listing, part, report):
        sub.add_argument("--cpu", action="store_true", help="toy sizes on the CPU")
    args = parser.parse_args()
    if args.command == "list":
        for p in PARTS:
            print(p.name, p.cpu_s if args.cpu else p.gpu_s)
    elif args.command == "part":
        print(json.dumps(run_part(args.name, args.out, args.cpu), default=str)[:4000])
    else:
        from device_report import write_report

        sys.exit(0 if write_report(args.out, args.cpu) else 1)


if __name__ == "__main__":
    main()
