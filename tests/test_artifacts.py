"""The artifact store under the conditions a long sweep meets: another job building the
same artifact, a job killed while holding its lock, a directory damaged after it was
built, a partial build with garbage in it, the disk filling up, an unreadable checkpoint."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, compose_config

from spin.artifacts import MANIFEST_FILE, ArtifactStore, write_json
from spin.errors import ArtifactError, CheckpointError
from spin.generation import HFGenerator
from spin.models import load_model

SPEC = {"stage": "demo", "n": 1}

# Another job: builds SPEC's artifact slowly, saying when it has started.
SLOW_BUILD = """
import sys, time
from pathlib import Path
from spin.artifacts import ArtifactStore

def build(work):
    print("building", flush=True)
    time.sleep(2)
    (work / "payload.txt").write_text("built by the other job")

ArtifactStore(Path(sys.argv[1])).get_or_build("demo", {"stage": "demo", "n": 1}, build)
"""

# Another job: takes a lock and holds it until it is killed.
HOLD_LOCK = """
import sys, time
from filelock import FileLock

lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def other_job(script: str, arg: str, ready: str) -> subprocess.Popen:
    """Start ``script`` in another process and return once it has printed ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, arg], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == ready
    return proc


def must_not_build(work: Path) -> None:
    raise AssertionError(f"built {work} again")


def write_payload(work: Path) -> None:
    (work / "payload.txt").write_text("built here")
    (work / "sub").mkdir(exist_ok=True)
    write_json(work / "sub" / "stats.json", {"n": 1})


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path, wait_log_interval_s=0.2)


def waiting_messages(caplog) -> list[str]:
    """What the store logged about waiting for another job's build."""
    return [r.getMessage() for r in caplog.records if "being built by another job" in r.message]


def test_job_waits_for_another_jobs_build_and_reuses_it(store, caplog):
    caplog.set_level(logging.INFO, logger="spin.artifacts")
    other = other_job(SLOW_BUILD, str(store.root), "building")
    artifact = store.get_or_build("demo", SPEC, must_not_build)
    other.wait(timeout=60)
    assert not artifact.built
    assert (artifact.path / "payload.txt").read_text() == "built by the other job"
    assert f"demo/{artifact.key}" in waiting_messages(caplog)[0]


def test_lock_left_by_a_killed_job_does_not_block(store, caplog):
    caplog.set_level(logging.INFO, logger="spin.artifacts")
    _, final = store.locate("demo", SPEC)
    final.parent.mkdir(parents=True)
    lock_file = Path(str(final) + ".lock")
    holder = other_job(HOLD_LOCK, str(lock_file), "locked")
    threading.Timer(1.0, holder.kill).start()  # SIGKILL: no chance to release anything
    built = []
    job = threading.Thread(
        target=lambda: built.append(store.get_or_build("demo", SPEC, write_payload)), daemon=True
    )
    job.start()
    job.join(timeout=10)
    assert built and built[0].built
    assert holder.wait(timeout=10) == -9
    assert lock_file.exists()  # the dead job's lock file stays, and blocks nobody
    assert waiting_messages(caplog)


def truncate(path: Path) -> None:
    path.write_text(path.read_text()[:3])


DAMAGE = {
    "file deleted": (lambda d: (d / "sub" / "stats.json").unlink(), "missing: ['sub/stats.json']"),
    "file truncated": (lambda d: truncate(d / "payload.txt"), "payload.txt (3 bytes, expected 10)"),
    "manifest missing": (lambda d: (d / MANIFEST_FILE).unlink(), "manifest.json"),
    "spec edited": (
        lambda d: (d / "spec.json").write_text(json.dumps({**SPEC, "n": 2})),
        "spec.json does not match the spec requested for it (differs in ['n'])",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_artifact_is_reported_and_kept(store, damage):
    built = store.get_or_build("demo", SPEC, write_payload)
    harm, problem = DAMAGE[damage]
    harm(built.path)
    with pytest.raises(ArtifactError) as err:
        store.get_or_build("demo", SPEC, must_not_build)
    assert str(built.path) in str(err.value) and problem in str(err.value)
    assert "Delete it" in str(err.value)
    assert (built.path / "payload.txt").exists()  # nothing of the user's is removed


def test_artifact_built_before_manifests_is_adopted_by_the_command_the_error_gives(store):
    built = store.get_or_build("demo", SPEC, write_payload)
    (built.path / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"python -m spin\.artifacts"):
        store.get_or_build("demo", SPEC, must_not_build)
    cmd = [sys.executable, "-m", "spin.artifacts", str(built.path)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert store.get_or_build("demo", SPEC, must_not_build).path == built.path


def test_garbage_in_a_partial_build_names_the_directory(store, tiny):
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer, compose_config("experiment=tiny").generation)
    _, final = store.locate("generations", SPEC)
    shard = final.with_name(final.name + ".partial") / "shards" / "shard-00000.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text("not json\n")

    def build(work: Path) -> None:
        generator.generate(["1+1=", "2+2="], shard_dir=work / "shards")

    with pytest.raises(ArtifactError) as err:
        store.get_or_build("generations", SPEC, build)
    message = str(err.value)
    assert f"resuming from {shard.parents[1]}" in message
    assert f"{shard}:1: not a JSON object" in message and "delete it" in message


def test_full_disk_is_named_keeps_finished_work_and_a_rerun_finishes(store, monkeypatch):
    done = store.get_or_build("demo", {"stage": "earlier"}, write_payload)
    computed = []

    def build(work: Path) -> None:
        expensive = work / "expensive.bin"
        if not expensive.exists():
            computed.append(work)
            expensive.write_bytes(b"x" * 100)
        write_json(work / "result.json", {"score": 1.0})

    write_text = Path.write_text

    def full_disk(path: Path, data: str, *args, **kwargs) -> int:
        if path.name == "result.json.tmp":
            write_text(path, data[:4], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(path, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError) as err:
        store.get_or_build("demo", SPEC, build)
    _, final = store.locate("demo", SPEC)
    partial = final.with_name(final.name + ".partial")
    assert err.value.errno == errno.ENOSPC
    assert "disk full" in str(err.value) and str(partial / "result.json") in str(err.value)
    assert (partial / "expensive.bin").exists() and not (partial / "result.json.tmp").exists()
    assert store.get_or_build("demo", {"stage": "earlier"}, must_not_build).path == done.path

    monkeypatch.setattr(Path, "write_text", write_text)  # space freed
    artifact = store.get_or_build("demo", SPEC, build)
    assert artifact.built and json.loads((artifact.path / "result.json").read_text())
    assert len(computed) == 1 and not partial.exists()


@pytest.mark.parametrize("corrupt", ["truncated", "garbage"])
def test_unreadable_weights_name_the_file_and_the_artifact_to_delete(store, tiny, corrupt):
    model, tokenizer = tiny

    def build(work: Path) -> None:
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)

    artifact = store.get_or_build("model", SPEC, build)
    weights = artifact.path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if corrupt == "truncated" else b"\xff" * len(data))
    with pytest.raises(CheckpointError) as err:
        load_model(artifact.path)
    assert str(weights) in str(err.value)
    assert f"delete the artifact {artifact.path}" in str(err.value)
