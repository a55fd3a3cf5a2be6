"""One experiment on one process or two (``trainer.distributed=ddp`` under torchrun, gloo on
the CPU): the same generations, reference log-probabilities, training losses and scores,
under the same artifact keys, with the job's files written once; and the launch checks that
stop a job whose config and launch disagree."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from conftest import ROOT, compose_config, job_dirs, train_in_process
from datasets import load_from_disk
from tiny_pairs import make_pairs, tiny_training_args

from spin.distributed import ACCELERATE_CONFIGS, block, check_launch
from spin.errors import ConfigError
from spin.job import start_job
from spin.logprobs import reference_logps
from spin.models import build_tiny
from spin.tracking import read_metrics
from spin.trainer import train_pairs
from spin.validation import validate

# The tiny chain on 24 prompts in shards of 8: one process generates one shard, the other
# two; 24 pairs (iteration 0), then 48 (iteration 1), in reference batches of 8 pairs; a
# global batch of 4 pairs: 4 on one process, 2 + 2 on two. By default iteration 0, sampled
# (each shard keeps its seed) and unscored; on demand (slow) the whole greedy chain to
# iteration 1, every model scored on the main process.
TINY = ("experiment=tiny", "data.n_train=24")
CHAINS = [
    pytest.param((*TINY, "generation=sampling", "iter=0", "eval=none"), id="iter0-sampled"),
    pytest.param((*TINY, "iter=1"), id="iter1-scored", marks=pytest.mark.slow),
]
ONE = ("trainer.batch_size=4",)
TWO = ("trainer.distributed=ddp", "trainer.world_size=2", "trainer.batch_size=2")
STEPS = [6, 12]  # optimizer steps of iterations 0 and 1
ENV = {"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
LAUNCH_VARS = ("WORLD_SIZE", "LOCAL_RANK", "RANK", "ACCELERATE_MIXED_PRECISION")


def launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    """train.py as a user starts it: plainly, or under torchrun with ``processes``."""
    script = [str(ROOT / "train.py"), *args]
    if processes > 1:
        torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        script = [*torchrun, *script]
    command = [sys.executable, *script]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Runs:
    """The same chain on one process (``one``) and on two (``two``, and what it printed)."""

    iterations: int
    one: Path
    two: Path
    two_stderr: str


@pytest.fixture(scope="module", params=CHAINS)
def runs(request, tmp_path_factory) -> Runs:
    chain = request.param
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    train_in_process(*chain, *ONE, f"paths.root={one}")  # one process: this one
    proc = launch(2, *chain, *TWO, f"paths.root={two}")
    iterations = 1 + int(next(a for a in chain if a.startswith("iter="))[len("iter=") :])
    return Runs(iterations, one, two, proc.stderr)


def artifacts(root: Path, kind: str) -> dict[str, Path]:
    return {p.name: p for p in (root / "artifacts" / kind).iterdir() if p.is_dir()}


def losses(model: Path) -> list[float]:
    history = json.loads((model / "history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def test_two_processes_build_the_artifacts_of_one_under_the_same_keys(runs):
    for kind in ("model", "generations", "reference", "eval"):
        if (runs.one / "artifacts" / kind).is_dir():
            assert artifacts(runs.two, kind).keys() == artifacts(runs.one, kind).keys()
    assert not list((runs.two / "artifacts").glob("*/*.partial"))
    # Each process generated and scored its own part.
    for stage in ("generate", "reference"):
        assert f"iter 0: {stage} [1]" in runs.two_stderr


def test_generations_are_identical(runs):
    for key, gen in artifacts(runs.one, "generations").items():
        other = artifacts(runs.two, "generations")[key]
        assert (other / "pairs.jsonl").read_text() == (gen / "pairs.jsonl").read_text()


def test_reference_logps_match(runs):
    for key, ref in artifacts(runs.one, "reference").items():
        mine = load_from_disk(str(ref / "pairs"))
        theirs = load_from_disk(str(artifacts(runs.two, "reference")[key] / "pairs"))
        assert theirs["real_input_ids"] == mine["real_input_ids"]
        for column in ("ref_real_logps", "ref_generated_logps"):
            assert theirs[column] == pytest.approx(mine[column], rel=1e-6)


def test_training_losses_match(runs):
    models = artifacts(runs.one, "model").items()
    trained = {key: path for key, path in models if (path / "history.json").exists()}
    steps = []
    for key, model in trained.items():
        theirs = losses(artifacts(runs.two, "model")[key])
        assert theirs == pytest.approx(losses(model), rel=1e-5)
        steps.append(len(theirs))
    assert sorted(steps) == STEPS[: runs.iterations]


def test_the_job_is_written_once_with_the_scores_of_one_process(runs):
    jobs = job_dirs(runs.two)
    assert len(jobs) == 1 and len(list((runs.two / "runs").glob("*/*"))) == 1  # one job folder
    report = json.loads((jobs[0] / "report.json").read_text())
    expected = json.loads((job_dirs(runs.one)[0] / "report.json").read_text())
    assert [r["model_key"] for r in report["rows"]] == [r["model_key"] for r in expected["rows"]]
    for row, wanted in zip(report["rows"], expected["rows"], strict=True):
        assert row["scores"] == pytest.approx(wanted["scores"], abs=1e-4)
    events = [r for r in read_metrics(jobs[0]) if r["type"] == "event"]
    assert events == [r for r in read_metrics(job_dirs(runs.one)[0]) if r["type"] == "event"]


# ---------------------------------------------------------------- fast pieces


def test_blocks_are_contiguous_whole_units_covering_every_item_once():
    for n_items, unit, count in [(16, 8, 2), (20, 8, 3), (5, 8, 2), (50_000, 64, 8)]:
        parts = [block(n_items, unit, index, count) for index in range(count)]
        assert [i for part in parts for i in part] == list(range(n_items))
        assert all(part.start % unit == 0 for part in parts if part)
        sizes = [len(part) for part in parts]
        assert max(sizes) - min(sizes) <= 2 * unit


def test_accumulated_micro_batches_train_as_one_batch_of_their_size(tmp_path):
    """Why a model's key holds the global batch alone: two micro-batches of 2 make the
    steps one batch of 4 makes, as two processes of 2 do (above)."""
    model, tokenizer = build_tiny(seed=0)
    texts = [(f"What is {i} + {i}?", f"{2 * i}", f"{2 * i + 1}") for i in range(24)]
    pairs = make_pairs(tokenizer, texts)
    real, generated = reference_logps(model, pairs, 16, tokenizer.pad_token_id, "reference")
    for pair, r, g in zip(pairs, real, generated, strict=True):
        pair["ref_real_logps"], pair["ref_generated_logps"] = r, g
    history, weights = {}, {}
    for batch, accumulation in ((4, 1), (2, 2)):
        model, tokenizer = build_tiny(seed=0)
        args = tiny_training_args(tmp_path / str(batch), batch, grad_accumulation=accumulation)
        history[batch] = train_pairs(model, tokenizer, pairs, args, "sigmoid", 0.1, 0.0, 0.0)
        weights[batch] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert [e["loss"] for e in history[2] if "loss" in e] == pytest.approx(
        [e["loss"] for e in history[4] if "loss" in e], rel=1e-5
    )
    assert torch.allclose(weights[2], weights[4], atol=1e-6)


def test_an_unknown_mode_names_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"trainer\.distributed='mpi'.*'ddp', 'fsdp', 'zero3'"):
        validate(compose_config("experiment=tiny", "trainer.distributed=mpi"))


@pytest.fixture
def launched(monkeypatch):
    """Set the variables a launcher sets; starts from a plain process."""
    for name in (*LAUNCH_VARS, "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_a_distributed_config_needs_a_distributed_launch(launched):
    with pytest.raises(ConfigError, match="accelerate launch --config_file conf/accelerate/ddp"):
        check_launch(compose_config("experiment=tiny", "trainer.distributed=ddp"))
    launched(WORLD_SIZE="2", LOCAL_RANK="0")
    with pytest.raises(ConfigError, match=re.escape("set trainer.distributed=ddp")):
        check_launch(compose_config("experiment=tiny"))


def test_the_launch_must_match_the_world_size_and_precision(launched, caplog):
    # The paper's 8 GPUs x 8 pairs run on one process: a warning, with the fix that keeps
    # its global batch of 64.
    check_launch(compose_config("experiment=paper_zephyr"))
    assert "a step trains on 8 pairs, not 64" in caplog.text
    assert "trainer.grad_accumulation=8 to keep the global batch of 64" in caplog.text
    launched(WORLD_SIZE="2", LOCAL_RANK="0")
    cfg = compose_config("experiment=tiny", "trainer.distributed=ddp")
    with pytest.raises(ConfigError, match=re.escape("set trainer.world_size=2")):
        check_launch(cfg)
    launched(ACCELERATE_MIXED_PRECISION="bf16")
    cfg = compose_config("experiment=tiny", "trainer.distributed=ddp", "trainer.world_size=2")
    with pytest.raises(ConfigError, match=re.escape("trainer.precision=fp32")):
        check_launch(cfg)


def test_zero3_needs_its_launch_and_deepspeed(launched):
    launched(WORLD_SIZE="2", LOCAL_RANK="0")
    cfg = compose_config("experiment=paper_zephyr", "trainer.distributed=zero3")
    with pytest.raises(ConfigError, match=re.escape("conf/accelerate/zero3.yaml")):
        check_launch(cfg)
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    launched(ACCELERATE_USE_DEEPSPEED="true")
    with pytest.raises(ConfigError, match=r"deepspeed package.*pip install -e '\.\[deepspeed\]'"):
        check_launch(cfg)


def test_a_job_with_a_distributed_config_started_plainly_stops_before_any_work(launched, tmp_path):
    cfg = compose_config("experiment=tiny", "trainer.distributed=ddp", f"paths.root={tmp_path}")
    with pytest.raises(ConfigError, match=re.escape("torchrun --nproc_per_node N")):
        start_job(cfg, tmp_path / "job", "job", "iter0", trains=True)
    assert not list(tmp_path.iterdir())


def test_shipped_accelerate_configs_are_accelerates_own_format():
    types = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    for mode, path in ACCELERATE_CONFIGS.items():
        config = load_config_from_file(str(ROOT / path))
        assert config.distributed_type.value == types[mode]
    zero3 = load_config_from_file(str(ROOT / ACCELERATE_CONFIGS["zero3"]))
    assert zero3.mixed_precision == "bf16"
    assert zero3.deepspeed_config["zero_stage"] == 3
    assert zero3.deepspeed_config["offload_optimizer_device"] == "none"
    assert zero3.deepspeed_config["offload_param_device"] == "none"
