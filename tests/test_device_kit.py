"""The device kit (benchmarks/device/): its package list cannot drift from pyproject, its
model shapes are the real architectures', and check.sh --cpu runs its parts and reports
them, so the kit still works the day a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from packaging.requirements import Requirement

sys.path.insert(0, str(ROOT / "benchmarks" / "device"))
import device_report
import manifest
from check import PARTS

CHECK = ROOT / "benchmarks" / "device" / "check.sh"
# What the default test run affords (about 30 s): the parts that are the kit's own code at
# toy sizes, and every part that needs CUDA (each skipped without starting torch). The
# others reuse tests this run already has (precision, resume, LoRA) or the slow benchmarks'
# contenders (generation, scoring); `pytest -m slow` runs them all.
KIT_CODE = ("environment", "packed_logps", "gpu_tests", "train_360m")
FAST_PARTS = " ".join([*KIT_CODE, *(part.name for part in PARTS if part.cuda_only)])


def flat(groups: dict[str, list[Requirement]]) -> list[Requirement]:
    return [req for reqs in groups.values() for req in reqs]


def test_every_pyproject_requirement_is_in_the_image_carried_or_left_out_with_a_reason():
    assert manifest.coverage_problems(flat(manifest.project_requirements())) == []
    assert all(manifest.LEFT_OUT.values())


def test_a_new_or_tightened_requirement_without_the_kit_fails_naming_the_manifest():
    problems = manifest.coverage_problems(
        [Requirement("brand-new-package>=1"), Requirement("trl>=99"), Requirement("torch>=3")]
    )
    assert len(problems) == 3, problems
    assert all("benchmarks/device/manifest.py" in p for p in problems), problems
    assert "brand-new-package" in problems[0] and "not in the GPU image" in problems[0]
    assert "carries trl 1.16.0" in problems[1]
    assert "the GPU image has torch 2.11.0" in problems[2]


def test_the_speed_runs_shapes_are_the_planners_known_architectures():
    from shapes import config

    from spin.planning.memory import KNOWN, from_hf_config

    smol = from_hf_config(config("smollm2-135m", 49152).to_dict(), "SmolLM2-135M")
    assert smol == KNOWN["smollm2-135m"]
    mistral = from_hf_config(config("mistral-7b", 32000).to_dict(), "Mistral-7B")
    assert mistral == KNOWN["zephyr-7b-sft-full"]


def test_a_part_without_a_result_is_reported_with_the_reason(tmp_path):
    details = tmp_path / "details"
    (details / "logs").mkdir(parents=True)
    (details / "status.tsv").write_text("environment\t124\t61\t60\nresume\t1\t3\t90\n")
    (details / "logs" / "resume.log").write_text("Traceback ...\nImportError: no module x\n")
    assert not device_report.write_report(tmp_path, cpu=True)
    parts = json.loads((tmp_path / "device_report.json").read_text())["parts"]
    assert parts["environment"]["why"] == "timed out after its limit of 60 s"
    assert "exited with 1" in parts["resume"]["why"] and "no module x" in parts["resume"]["why"]
    assert parts["lora"]["status"] == "not run"
    assert "| resume | failed |" in (tmp_path / "device_report.md").read_text()


def run_check(out, parts: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if parts is not None:
        env["CHECK_PARTS"] = parts
    return subprocess.run(
        [str(CHECK), "--cpu", "--python", sys.executable, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def assert_passed(out, proc: subprocess.CompletedProcess) -> dict:
    """The check exited 0 and its report says so; the parts' results."""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    found = json.loads((out / "device_report.json").read_text())
    assert found["passed"] and found["mode"] == "cpu (toy sizes)"
    assert "| environment | passed |" in (out / "device_report.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "details.tar.gz",
        "device_report.json",
        "device_report.md",
    ]
    return found["parts"]


def test_check_sh_cpu_runs_the_kits_parts_and_writes_both_reports(tmp_path):
    parts = assert_passed(tmp_path, run_check(tmp_path, FAST_PARTS))
    assert parts["packed_logps"]["status"] == "passed"
    training = parts["train_360m"]
    assert training["status"] == "passed"
    assert set(training["ratio_pairs_per_s"]) == {"trl", "trl-precompute"}
    assert parts["zero3"] == {"status": "skipped", "why": "needs a CUDA GPU", "seconds": 0.0}
    assert parts["resume"]["why"] == "not among CHECK_PARTS"


@pytest.mark.slow
def test_check_sh_cpu_passes_every_part(tmp_path):
    parts = assert_passed(tmp_path, run_check(tmp_path, None))
    ran = {name for name, r in parts.items() if r["status"] == "passed"}
    assert ran >= {"precision", "resume", "generation", "scoring", "lora"}, parts
