"""Shared pieces of the benchmarks: the model, the pairs, the machine and the child processes.

Every contender of a benchmark runs in its own Python process so that its peak resident
memory (``ru_maxrss``) is its own; the parent collects one JSON line from each.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import OmegaConf

from spin.data import PromptFormatter
from spin.data.arith import generate_arith

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONF = ROOT / "conf" / "model" / "smollm2-135m.yaml"
MODEL_DIR = ROOT / "outputs" / "bench" / "smollm2-135m"
DIFFICULTY = [2, 3]  # the default experiment's (conf/data/arith.yaml)
RESULT_PREFIX = "BENCH_RESULT "
_NUMBER = re.compile(r"-?\d+")


def model_dir() -> Path:
    """The SmolLM2-135M start model as a Hugging Face directory, converted from GGUF once."""
    if not (MODEL_DIR / "config.json").is_file():
        from spin.models import materialize_start_model

        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        materialize_start_model(OmegaConf.load(MODEL_CONF), MODEL_DIR)
    return MODEL_DIR


def perturbed(response: str) -> str:
    """A wrong but similar answer: every occurrence of the final number plus one, so the
    "generated" side is deterministic and needs no generation."""
    numbers = _NUMBER.findall(response)
    if not numbers:
        return response + " 1"
    last = numbers[-1]
    return re.sub(rf"(?<!\d){re.escape(last)}(?!\d)", str(int(last) + 1), response)


def arith_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` (prompt, real, generated) triples from the project's arithmetic data."""
    train, _ = generate_arith(n_train=n, n_test=0, seed=seed, difficulty=DIFFICULTY)
    return [
        {"prompt": r["prompt"], "real": r["response"], "generated": perturbed(r["response"])}
        for r in train
    ]


def encode_pairs(tokenizer: Any, triples: list[dict[str, str]], max_length: int) -> list[dict]:
    """Token ids and response masks, formatted as the pipeline formats them."""
    fmt = PromptFormatter(tokenizer, "chat")
    pairs = []
    for t in triples:
        real = fmt.encode(t["prompt"], t["real"], max_length // 2, max_length)
        generated = fmt.encode(t["prompt"], t["generated"], max_length // 2, max_length)
        pairs.append(
            {
                "real_input_ids": real["input_ids"],
                "real_response_mask": real["response_mask"],
                "generated_input_ids": generated["input_ids"],
                "generated_response_mask": generated["response_mask"],
            }
        )
    return pairs


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(threshold: float = 1.5) -> float:
    """Wait (at most ``$BENCH_MAX_WAIT_S``, default 600 s) for the 1-minute load to fall below
    ``threshold``: on a shared machine another process's load would slow some contenders more
    than others. Returns the load at the start; the figures are printed next to it."""
    limit_s = float(os.environ.get("BENCH_MAX_WAIT_S", "600"))
    deadline = time.monotonic() + limit_s
    while load_average() >= threshold and time.monotonic() < deadline:
        time.sleep(15)
    return load_average()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def emit(result: dict[str, Any]) -> None:
    """Hand a child's result to the parent (one prefixed JSON line on stdout)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(script: Path, args: list[str]) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter and return the result it emitted."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(
        f"{script.name} {' '.join(args)} exited with {proc.returncode} and no result:\n"
        f"{proc.stderr[-4000:]}"
    )


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, in seconds, after one untimed warm-up call
    (thread pool, allocator, kernel selection)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak_flops(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32):
    """Measured matrix-multiply FLOP/s of this machine at ``dtype`` (best of ``repeats``)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / best_of(lambda: torch.mm(a, b), repeats)


def interleaved(names: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """``(repeat, name)`` in the order to run them: the names forward on even repeats and
    reversed on odd ones (A B C, C B A, ...). Run in a fixed order, the first contender
    always meets the machine at its quietest (a load of 0.08 against 1.4-1.9 for the later
    ones, measured); alternating gives every contender the same mean place over each two
    repeats, and a run of the same contender twice at the turn shows its own spread."""
    return [
        (repeat, name)
        for repeat in range(repeats)
        for name in (names if repeat % 2 == 0 else list(reversed(names)))
    ]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, extremes and the spread between them as a fraction of the median: what one
    contender's repeated figures are quoted as."""
    median = statistics.median(values)
    low, high = min(values), max(values)
    return {"median": median, "min": low, "max": high, "spread": (high - low) / median}
