"""Cluster runs through hydra-submitit-launcher: the SLURM launcher config composes with a
user's overrides, and iteration jobs submitted at once (submitit's local executor, the
same launcher code a SLURM array goes through) wait for each other's artifacts instead of
building them twice."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, artifact_events, job_dirs, run_train
from hydra import compose, initialize_config_dir

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
