"""Correctness parts of the device check: the environment, packed log-probabilities, mixed
precision with float32 masters, resume after a kill, and the tests marked ``gpu``.

They drive the project's own code and reuse the tests' helpers rather than restating them;
on a GPU they run where the tests never do, on CUDA.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import manifest
import torch
from packaging.utils import canonicalize_name
from part_context import Run, Skip, verdict

ROOT = manifest.ROOT
# Packed against per-sequence sums: |difference| <= atol + rtol * |per-sequence sum|.
TOLERANCE = {"float32": (1e-3, 1e-5), "bfloat16": (0.05, 1e-2)}
# Test files whose tests run on the GPU: those marked ``gpu``, if any.
GPU_MARK = re.compile(r"pytest\.mark\.gpu\b")


def environment(run: Run) -> dict:
    """What the figures were measured on, and whether every dependency of the project is
    installed at a version pyproject allows (extras are listed, not required)."""
    cuda = torch.cuda.is_available()
    found = installed()
    unmet = {
        group: [
            str(req)
            for req in reqs
            if (version := found.get(canonicalize_name(req.name))) is None
            or not req.specifier.contains(version, prereleases=True)
        ]
        for group, reqs in manifest.project_requirements().items()
    }
    info = {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if cuda
        else None,
        "driver": nvidia_smi("driver_version"),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": found.get("transformers"),
        "trl": found.get("trl"),
        "deepspeed": found.get("deepspeed"),
        "commit": commit(),
        "unmet_requirements": {group: reqs for group, reqs in unmet.items() if reqs},
    }
    problems = []
    if not (cuda or run.toy):
        problems.append("torch sees no CUDA GPU")
    if unmet["dependencies"]:
        problems.append(f"unmet: {', '.join(unmet['dependencies'])}")
    return {"ok": not problems, "why": "; ".join(problems) or None, **info}


def installed() -> dict[str, str]:
    """Installed distributions and their versions, as imports see them: where the kit's
    folder shadows the image's copy of a package (transformers), the first on the path."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"]:
            found.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    return found


def nvidia_smi(field: str) -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout else None


def commit() -> str:
    """The checkout's commit, or, where the tree travelled without .git, the kit's."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode == 0:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    stamp = manifest.KIT / "kit.json"
    if stamp.is_file():
        return f"{json.loads(stamp.read_text())['commit']} (the kit's; no .git here)"
    return "unknown"


def plain_logps(model, pairs: list[dict]) -> torch.Tensor:
    """The textbook computation :func:`spin.logprobs.pair_logps` replaces: each side of
    each pair alone through the model, log-softmax over the whole vocabulary at every
    position, the response tokens' terms summed; real sides first, then generated."""
    sums = []
    for side in ("real", "generated"):
        for pair in pairs:
            ids = torch.tensor(pair[f"{side}_input_ids"], device=model.device)
            mask = torch.tensor(pair[f"{side}_response_mask"][1:], device=model.device)
            logps = model(ids[None]).logits[0, :-1].float().log_softmax(-1)
            sums.append((logps.gather(-1, ids[1:, None])[:, 0] * mask).sum())
    return torch.stack(sums)


def packed_logps(run: Run) -> dict:
    """Packed pairs (the prompt once, only response positions projected) against the plain
    per-sequence computation, on the device: the tiny model in float32, and SmolLM2-135M's
    shape with random weights under bfloat16 autocast over float32 weights, as training
    runs it."""
    import common
    import shapes

    from spin.logprobs import pack_pairs, pair_logps
    from spin.models import build_tiny

    tiny_model, tiny_tokenizer = build_tiny(seed=0)
    tok = shapes.tokenizer(run.toy)
    real_shape = shapes.random_model("smollm2-135m", tok, run.device, torch.float32, run.toy)
    cases = {
        "float32": (tiny_model.to(run.device), tiny_tokenizer),
        "bfloat16": (real_shape, tok),
    }
    figures, ok = {}, True
    for dtype, (model, tokenizer) in cases.items():
        pairs = common.encode_pairs(tokenizer, common.arith_pairs(8), 512)
        model.eval()
        autocast = torch.autocast(run.device.type, torch.bfloat16, enabled=dtype == "bfloat16")
        with torch.no_grad(), autocast:
            packed = pair_logps(model, pack_pairs(pairs, tokenizer.pad_token_id)).float()
            plain = plain_logps(model, pairs)
        atol, rtol = TOLERANCE[dtype]
        gap = (packed - plain).abs()
        figures[dtype] = {
            "max_abs_diff": gap.max().item(),
            "max_rel_diff": (gap / plain.abs()).max().item(),
            "mean_abs_logp": plain.abs().mean().item(),
            "atol": atol,
            "rtol": rtol,
        }
        ok &= bool((gap <= atol + rtol * plain.abs()).all())
    return {"ok": ok, **figures}


def precision(run: Run) -> dict:
    """The tiny chain (two iterations; one at toy size) in float32 and in bfloat16 with
    float32 master weights: how far the weights moved against float32 (at least half as
    far, as tests/test_precision.py requires) and that the model is saved in bfloat16."""
    from conftest import compose_config
    from test_precision import MIXED, TINY, stored_dtypes, weight_change

    from spin.job import run_job
    from spin.stages.context import Context
    from spin.stages.start import base_model
    from spin.tracking import SilentTracker

    size = ("iter=0",) if run.toy else ("iter=1",)
    moved, dtypes = {}, set()
    for label, extra in (("fp32", ()), ("bf16", MIXED)):
        root = run.work / label
        cfg = compose_config(*TINY, *size, *extra, f"paths.root={root / 'outputs'}")
        report = run_job(cfg, root / "job", "device-precision")
        start = Path(base_model(Context(cfg, SilentTracker())).location)
        trained = Path(report["iterations"][-1]["model"])
        moved[label] = weight_change(cfg, start, trained)
        dtypes = stored_dtypes(trained)
    ratio = moved["bf16"][0] / moved["fp32"][0]
    checks = {
        f"bf16 moved the weights {ratio:.2f}x as far as fp32": ratio < 0.5,
        f"bf16 changed {moved['bf16'][1]:.0%} of the weights": moved["bf16"][1] < 0.5,
        f"saved as {sorted(map(str, dtypes))}": dtypes != {torch.bfloat16},
    }
    return {
        **verdict(checks),
        "iterations": 1 if run.toy else 2,
        "movement_ratio_bf16_to_fp32": ratio,
        "mean_change": {k: v[0] for k, v in moved.items()},
        "fraction_changed": {k: v[1] for k, v in moved.items()},
        "saved_dtypes": sorted(str(d) for d in dtypes),
    }


def pytest_run(run: Run, *args: str) -> dict:
    """pytest on ``args`` in one process (no workers), offline; its summary line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    (run.work / "pytest.log").write_text(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr[-500:]
    why = None if proc.returncode == 0 else proc.stdout[-2000:]
    return {"ok": proc.returncode == 0, "summary": summary, "why": why}


def resume(run: Run) -> dict:
    """Training killed (SIGKILL) after a checkpoint in its second epoch and run again ends
    with the uninterrupted run's losses and weights, bit for bit (tests/test_resume.py's
    fast test, here on the device: the tiny model trains on CUDA)."""
    test = "tests/test_resume.py::test_training_killed_in_a_later_epoch_resumes_to_the_same_weights"
    return pytest_run(run, test)


def gpu_tests(run: Run) -> dict:
    """The tests marked ``gpu`` (none yet: every test runs on a CPU)."""
    marked = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if GPU_MARK.search(path.read_text())
    )
    if not marked:
        raise Skip("no test is marked gpu")
    return pytest_run(run, "-m", "gpu", *marked)
