"""One experiment on one process or several (``trainer.distributed``).

Every process of a launch (``accelerate launch --config_file conf/accelerate/<mode>.yaml
train.py ... trainer.distributed=<mode>``, or for ``ddp`` ``torchrun`` or the tasks of one
SLURM job through the submitit launcher) runs the same job.
Training is the HF Trainer's: it reads DDP, FSDP or DeepSpeed ZeRO-3 from the launched
accelerate config. Around training:

- generation and the reference pass give each process a contiguous block of the prompts
  or pairs, and the main process gathers the results back in input order;
- only the main process touches the artifact store (lock, ``<key>.partial``, manifest,
  rename) and writes the job's files; the others wait for an artifact's final directory to
  appear, by polling the disk rather than in a collective, so a long build on the main
  process alone (scoring a model) never runs into the process group's timeout.

So a job gives the same artifacts under the same keys on one process or several, and a
finished artifact is reused by either.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from spin.artifacts import Artifact, ArtifactStore, verify
from spin.errors import ConfigError

log = logging.getLogger(__name__)

# trainer.distributed -> the accelerate config shipped for it.
ACCELERATE_CONFIGS = {
    "ddp": "conf/accelerate/ddp.yaml",
    "fsdp": "conf/accelerate/fsdp.yaml",
    "zero3": "conf/accelerate/zero3.yaml",
}
# The variable `accelerate launch` sets when its config turns FSDP or DeepSpeed on.
LAUNCH_FLAGS = {"fsdp": "ACCELERATE_USE_FSDP", "zero3": "ACCELERATE_USE_DEEPSPEED"}
# trainer.precision -> the accelerate mixed_precision that agrees with it.
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
# Modes whose processes each hold a part of the weights: saving gathers them.
SHARDED_WEIGHTS = ("fsdp", "zero3")
# A collective waits this long for every process. Waits for another job's build of the
# same artifact (its lock) happen inside one, so this is longer than torch's default.
COLLECTIVE_TIMEOUT = timedelta(hours=2)
POLL_INTERVAL_S = 1.0
WAIT_LOG_INTERVAL_S = 60.0


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun and accelerate set WORLD_SIZE;
    a submitit job of several tasks gets it here, see :func:`adopt_submitit_tasks`)."""
    adopt_submitit_tasks()
    return int(os.environ.get("WORLD_SIZE", "1"))


def adopt_submitit_tasks() -> None:
    """Give each task of a submitit job of several (``hydra.launcher.tasks_per_node`` above
    1, on SLURM or submitit's local executor) the variables torchrun would have set: RANK,
    LOCAL_RANK, WORLD_SIZE and the main task's address, which submitit reads from SLURM's
    own. Every GPU of the node stays visible; :func:`init` picks the task's by LOCAL_RANK.
    Nothing changes for a single task, or when a launcher inside the job set RANK."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "RANK" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    tasks = TorchDistributedEnvironment()
    if tasks.world_size > 1:
        tasks.export(set_cuda_visible_devices=False)


def init() -> None:
    """Join the launch's process group, once; nothing for a single process.

    The backend is the one accelerate would pick (gloo on CPUs, NCCL on GPUs, plus gloo for
    the CPU copies FSDP gathers weights into), so the Trainer's DDP, FSDP or ZeRO-3 and this
    module's object collectives share the group; it is made here, before the Trainer, for
    the job folder's name (spin/entry.py) and with a longer timeout.
    """
    if launched_world_size() == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        fsdp = os.environ.get(LAUNCH_FLAGS["fsdp"], "false").lower() == "true"
        backend = "cuda:nccl,cpu:gloo" if fsdp else "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def broadcast(value: Any) -> Any:
    """The main process's ``value``, on every process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any] | None:
    """Every process's ``value`` in rank order, on the main process; None on the others."""
    if world_size() == 1:
        return [value]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(value, out, dst=0)
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def block(n_items: int, unit: int, index: int, count: int) -> range:
    """Process ``index`` of ``count``'s share of ``n_items``: a contiguous run of whole
    units of ``unit`` items (generation shards, reference batches), so each unit is
    computed exactly as one process computes it; the last unit may be short."""
    n_units = -(-n_items // unit)
    first, last = index * n_units // count, (index + 1) * n_units // count
    return range(first * unit, min(last * unit, n_items))


def my_block(n_items: int, unit: int) -> range:
    return block(n_items, unit, rank(), world_size())


def wait_for(final: Path, what: str) -> None:
    """Wait until the main process has renamed an artifact into ``final``."""
    start = last_log = time.monotonic()
    while not final.is_dir():
        if time.monotonic() - last_log >= WAIT_LOG_INTERVAL_S:
            last_log = time.monotonic()
            log.info("Waiting for the main process to write %s (%.0f s)", what, last_log - start)
        time.sleep(POLL_INTERVAL_S)


def _found(store: ArtifactStore, kind: str, spec: dict[str, Any]) -> Artifact:
    """The artifact the main process wrote, once it is there and complete."""
    key, final = store.locate(kind, spec)
    wait_for(final, f"{kind}/{key}")
    verify(final, spec)
    return Artifact(kind, key, final, built=False)


def build_on_main(
    store: ArtifactStore,
    kind: str,
    spec: dict[str, Any],
    build: Callable[[Path], None],
    config_yaml: str | None,
) -> Artifact:
    """An artifact the main process builds alone (start model, preferences, scores)."""
    if is_main():
        return store.get_or_build(kind, spec, build, config_yaml)
    return _found(store, kind, spec)


def build_together(
    store: ArtifactStore,
    kind: str,
    spec: dict[str, Any],
    build: Callable[[Path], None],
    config_yaml: str | None,
) -> Artifact:
    """An artifact every process builds its part of (generations, reference, training):
    ``build(work)`` runs on all of them, with collectives inside, once the main process
    holds the artifact's lock; only the main process writes the artifact's files."""
    if world_size() == 1:
        return store.get_or_build(kind, spec, build, config_yaml)
    if is_main():

        def lead(work: Path) -> None:
            broadcast(str(work))
            build(work)

        artifact = store.get_or_build(kind, spec, lead, config_yaml)
        if not artifact.built:
            broadcast(None)
        return artifact
    work = broadcast(None)
    if work is not None:
        build(Path(work))
    return _found(store, kind, spec)


def check_launch(cfg: DictConfig) -> None:
    """Fail before any work, naming the setting and the fix, when ``trainer.distributed``
    and ``trainer.world_size`` do not match how this process was launched."""
    mode, world = cfg.trainer.distributed, launched_world_size()
    if mode == "none":
        _check_one_process(cfg, world)
        return
    command = f"accelerate launch --config_file {ACCELERATE_CONFIGS[mode]} train.py ..."
    if "LOCAL_RANK" not in os.environ:
        raise ConfigError(
            f"trainer.distributed={mode} but this process was not started by a distributed "
            f"launcher: run `{command} trainer.distributed={mode}`"
            + (" (or `torchrun --nproc_per_node N train.py ...`)" if mode == "ddp" else "")
            + ", or set trainer.distributed=none"
        )
    _check_launch_flags(mode, command)
    if cfg.trainer.world_size != world:
        raise ConfigError(
            f"trainer.world_size={cfg.trainer.world_size} but {world} processes were "
            f"launched: {_world_size_fix(cfg, world)}"
        )
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched not in ("no", MIXED_PRECISION[cfg.trainer.precision]):
        raise ConfigError(
            f"the accelerate config launched mixed_precision={launched} but "
            f"trainer.precision={cfg.trainer.precision}: set trainer.precision={launched} "
            f"(or launch with --mixed_precision {MIXED_PRECISION[cfg.trainer.precision]})"
        )
    if mode in SHARDED_WEIGHTS and cfg.lora.enabled:
        raise ConfigError(
            f"lora.enabled=true with trainer.distributed={mode} is not supported: adapters "
            "are small, train them with trainer.distributed=ddp"
        )
    if mode in SHARDED_WEIGHTS and not torch.cuda.is_available():
        # accelerate turns FSDP and DeepSpeed on for GPU processes only: on CPUs the
        # launch would silently train with DDP.
        raise ConfigError(f"trainer.distributed={mode} needs CUDA GPUs; on CPUs use ddp")


def _check_one_process(cfg: DictConfig, world: int) -> None:
    """``trainer.distributed=none``: one process. A preset for several GPUs run on one is
    allowed (the dry-run plan assumes ``trainer.world_size`` devices), with a warning: its
    steps train on fewer pairs than the configured global batch."""
    if world > 1:
        raise ConfigError(
            f"this process is one of {world} launched together, but trainer.distributed="
            "none runs the job on one process: set trainer.distributed=ddp (or fsdp, "
            f"zero3) and trainer.world_size={world}, or run `python train.py ...`"
        )
    if cfg.trainer.world_size != 1:
        log.warning(
            "trainer.world_size=%d but this job runs on one process, so a step trains on %d "
            "pairs, not %d: %s",
            cfg.trainer.world_size,
            cfg.trainer.batch_size * cfg.trainer.grad_accumulation,
            _global_batch(cfg),
            _world_size_fix(cfg, world),
        )


def _global_batch(cfg: DictConfig) -> int:
    """Pairs of one optimizer step as configured: per process, accumulated, all processes."""
    trainer = cfg.trainer
    return trainer.batch_size * trainer.grad_accumulation * trainer.world_size


def _world_size_fix(cfg: DictConfig, world: int) -> str:
    """How to make ``trainer.world_size`` the ``world`` processes that run the job, keeping
    the configured global batch where the accumulation can; or, for one process, how to
    launch as many as configured."""
    trainer = cfg.trainer
    per_step = trainer.batch_size * world
    fix = f"set trainer.world_size={world}"
    if _global_batch(cfg) % per_step == 0:
        fix += (
            f" and trainer.grad_accumulation={_global_batch(cfg) // per_step} to keep the "
            f"global batch of {_global_batch(cfg)} pairs"
        )
    if trainer.distributed == "none":
        fix += (
            f", or launch {trainer.world_size} processes (`accelerate launch --config_file "
            f"conf/accelerate/<ddp|fsdp|zero3>.yaml --num_processes {trainer.world_size} "
            "train.py ... trainer.distributed=<ddp|fsdp|zero3>`)"
        )
    return fix


def _check_launch_flags(mode: str, command: str) -> None:
    """The launched accelerate config turns on the mode's engine, and no other one."""
    for other, flag in LAUNCH_FLAGS.items():
        on = os.environ.get(flag, "false").lower() == "true"
        if on and other != mode:
            raise ConfigError(
                f"the launched accelerate config turns on {other} ({flag}=true) but "
                f"trainer.distributed={mode}: launch with {ACCELERATE_CONFIGS[mode]} or set "
                f"trainer.distributed={other}"
            )
        if not on and other == mode:
            raise ConfigError(
                f"trainer.distributed={mode} but the launch did not turn it on ({flag} is "
                f"not true): run `{command} trainer.distributed={mode}`"
            )
    if mode == "zero3" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "trainer.distributed=zero3 needs the deepspeed package, which is not installed: "
            "pip install -e '.[deepspeed]' (or pip install deepspeed) on the GPU machine"
        )


def shards_weights(cfg: DictConfig) -> bool:
    """Whether each process holds only part of the trained weights (FSDP, ZeRO-3), so the
    Trainer must gather them to save the model."""
    return cfg.trainer.distributed in SHARDED_WEIGHTS
