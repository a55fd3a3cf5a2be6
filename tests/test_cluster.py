"""Cluster runs through hydra-submitit-launcher: the SLURM launcher config composes with a
user's overrides, and iteration jobs submitted at once (submitit's local executor, the
same launcher code a SLURM array goes through) wait for each other's artifacts instead of
building them twice."""

from __future__ import annotations

import importlib.util
import json
import os
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
from conftest import ROOT, artifact_events, job_dirs, run_train
from hydra import compose, initialize_config_dir

from spin import distributed

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]')",
)


def launcher(*overrides: str):
    """The hydra.launcher node `python train.py -m hydra/launcher=slurm <overrides>` uses."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True
        )
    return cfg.hydra.launcher


def test_slurm_launcher_defaults_are_one_gpu_jobs():
    node = launcher()
    assert node._target_.endswith("SlurmLauncher")
    assert (node.nodes, node.tasks_per_node, node.gpus_per_node) == (1, 1, 1)
    assert node.cpus_per_task == 8 and node.mem_gb == 64
    assert node.timeout_min == 1440 and node.max_num_timeout == 3
    assert node.partition is None  # the cluster's default


def test_every_slurm_setting_is_overridable():
    node = launcher(
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=lab",
        "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.tasks_per_node=8",
        "hydra.launcher.cpus_per_task=12",
        "hydra.launcher.timeout_min=60",
        "hydra.launcher.array_parallelism=4",
        "+hydra.launcher.additional_parameters.mail-type=END",
    )
    assert node.partition == "gpu" and node.account == "lab"
    assert (node.gpus_per_node, node.tasks_per_node, node.cpus_per_task) == (8, 8, 12)
    assert node.timeout_min == 60 and node.array_parallelism == 4
    assert node.additional_parameters == {"mail-type": "END"}


@pytest.mark.slow
def test_iteration_jobs_submitted_at_once_wait_for_each_other(tmp_path: Path):
    """iter=0,1,2 start together: the job of iteration 2 needs iteration 1's model while the
    job of iteration 1 builds it, and waits for it instead of building it again."""
    run_train(
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=tiny",
        "iter=0,1,2",
        f"paths.root={tmp_path}",
    )
    jobs = job_dirs(tmp_path)
    assert len(jobs) == 3
    events = artifact_events(tmp_path)
    built = Counter((e["kind"], e["key"]) for e in events if e["built"])
    assert set(built.values()) == {1}
    # start model + three trained models; generations, reference and scores per iteration
    assert Counter(kind for kind, _ in built) == {
        "model": 4,
        "generations": 3,
        "reference": 3,
        "eval": 4,
    }
    logs = "".join((job / "train.log").read_text() for job in jobs)
    waited = {
        line.split("Waiting for ")[1].split(" ")[0]
        for line in logs.splitlines()
        if "being built by another job" in line
    }
    models = {f"model/{key}" for kind, key in built if kind == "model"}
    assert waited & models  # some job waited for a model another job was training


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


def slurm_task(procid: int, localid: int, ntasks: int, nodes: int) -> dict[str, str]:
    """The variables SLURM gives one task of a job submitted through submitit."""
    return {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NODEID": str(procid // (ntasks // nodes)),
        "SLURM_JOB_NODELIST": "gpu-[07-08]" if nodes == 2 else "gpu-07",
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(localid),
    }


def launched_as(env: dict[str, str]) -> tuple[int, dict[str, str | None]]:
    """What a task with ``env`` (and no launcher's variables) counts as launched, and the
    rank variables it then has; the process's own environment is restored after."""
    with mock.patch.dict(os.environ, env):
        for name in (*RANK_VARIABLES, "MASTER_PORT"):
            os.environ.pop(name, None)
        world = distributed.launched_world_size()
        return world, {name: os.environ.get(name) for name in RANK_VARIABLES}


def test_each_task_of_a_multi_gpu_slurm_job_gets_its_rank():
    world, ranks = launched_as(slurm_task(procid=11, localid=3, ntasks=16, nodes=2))
    assert world == 16
    assert ranks == {
        "RANK": "11",
        "LOCAL_RANK": "3",
        "WORLD_SIZE": "16",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu-07",
    }


def test_a_one_task_job_and_a_launcher_inside_the_job_are_left_alone():
    world, ranks = launched_as(slurm_task(procid=0, localid=0, ntasks=1, nodes=1))
    assert world == 1 and set(ranks.values()) == {None}
    torchrun = {"RANK": "1", "WORLD_SIZE": "2"}
    with mock.patch.dict(os.environ, {**slurm_task(5, 5, ntasks=8, nodes=1), **torchrun}):
        assert distributed.launched_world_size() == 2  # torchrun's, not SLURM's 8
        assert os.environ["RANK"] == "1"


@pytest.mark.slow
def test_a_job_of_two_tasks_trains_with_ddp_as_torchrun_does(tmp_path: Path):
    """hydra.launcher.tasks_per_node=2 through submitit's local executor: the two tasks are
    the two ranks of one job, which ends as the same job on one process does."""
    common = ["experiment=tiny", "trainer.world_size=2", "trainer.batch_size=2"]
    run_train(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.tasks_per_node=2",
        "trainer.distributed=ddp",
        *common,
        f"paths.root={tmp_path / 'tasks'}",
    )
    run_train(*common, "trainer.grad_accumulation=2", f"paths.root={tmp_path / 'one'}")
    (tasks_job,) = job_dirs(tmp_path / "tasks")
    (one_job,) = job_dirs(tmp_path / "one")
    logs = "".join(p.read_text() for p in (tmp_path / "tasks").rglob("*_log.err"))
    assert "generate [0]" in logs and "generate [1]" in logs  # the prompts split in two
    reports = [json.loads((job / "report.json").read_text()) for job in (tasks_job, one_job)]
    keys = [[row["model_key"] for row in report["rows"]] for report in reports]
    assert keys[0] == keys[1]  # the same global batch and data: the same models
    losses = [[c["loss"] for row in r["rows"] for c in row["curves"]] for r in reports]
    assert losses[0] and losses[0] == pytest.approx(losses[1], rel=1e-5)
