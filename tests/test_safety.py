"""Safe defaults: no remote code, no pickled weights, no secrets in outputs, and no folder
outside the outputs root."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from spin import models
from spin.stages.context import Context
from spin.stages.loading import ModelRef

FAKE_SECRETS = {
    "WANDB_API_KEY": "fakewandbkey0spin0test0" + "7" * 17,
    "HF_TOKEN": "hf_FakeHubTokenSpinTest0123456789abcdef",
    "HUGGING_FACE_HUB_TOKEN": "hf_FakeLegacyTokenSpinTest0123456789abc",
}
# Pickle-based formats that can run code when loaded.
PICKLED = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """train.py as a user runs it, with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The tiny chain, W&B logging offline, with fake tokens in the environment."""
    root = tmp_path_factory.mktemp("secrets")
    proc = train("experiment=tiny", f"paths.root={root}", "logger=wandb", env=FAKE_SECRETS)
    assert proc.returncode == 0, proc.stderr
    return root, proc


def test_tokens_never_reach_a_saved_config_log_or_metrics(wandb_run):
    root, proc = wandb_run
    files = [p for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "metrics.jsonl", "report.json", "train.log"} <= names
    assert any(p.suffix == ".wandb" for p in files)  # the offline W&B run was written
    for path in files:
        content = path.read_bytes()
        for variable, secret in FAKE_SECRETS.items():
            assert secret.encode() not in content, f"{variable} found in {path}"
    for variable, secret in FAKE_SECRETS.items():
        assert secret not in proc.stdout + proc.stderr, f"{variable} printed"


def test_weights_are_safetensors_and_nothing_pickled_is_kept(wandb_run):
    root, _ = wandb_run
    artifacts = root / "artifacts"
    pickled = [p for p in artifacts.rglob("*") if p.suffix in PICKLED]
    assert pickled == []
    # the start model, and the iteration-0 model in its artifact's model/ folder
    assert len(list(artifacts.glob("model/*/model.safetensors"))) == 1
    assert len(list(artifacts.glob("model/*/model/model.safetensors"))) == 1


def project_sources() -> list[Path]:
    folders = [ROOT / "spin", ROOT / "evaluation", ROOT / "benchmarks"]
    return [*ROOT.glob("*.py"), *(p for folder in folders for p in folder.rglob("*.py"))]


def test_every_torch_load_in_the_project_is_weights_only():
    unsafe = []
    for path in project_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if not (isinstance(func, ast.Attribute) and func.attr == "load"):
                continue
            if not (isinstance(func.value, ast.Name) and func.value.id == "torch"):
                continue
            flags = {k.arg: k.value for k in node.keywords}
            flag = flags.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unsafe == []


@pytest.mark.parametrize(
    ("overrides", "expected"), [((), False), (("model.trust_remote_code=true",), True)]
)
def test_remote_code_runs_only_when_the_config_turns_it_on(
    tmp_path, monkeypatch, overrides, expected
):
    seen = []

    def spy(real):
        def load(*args, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return real(*args, **kwargs)

        return load

    model, tokenizer = models.build_tiny()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    auto_model = models.AutoModelForCausalLM.from_pretrained
    auto_tokenizer = models.AutoTokenizer.from_pretrained
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy(auto_model))
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", spy(auto_tokenizer))

    cfg = compose_config("experiment=tiny", f"paths.root={tmp_path}", *overrides)
    ctx = Context(cfg, tracker=None)
    ref = ModelRef("m", str(tmp_path / "m"))
    ctx.models.load(ref)
    ctx.long_prompts(ref)
    assert seen == [expected] * 3  # tokenizer and model, then the tokenizer for the checks


def test_model_configs_leave_remote_code_off():
    for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        cfg = compose_config(f"model={path.stem}")
        assert cfg.model.trust_remote_code is False, path.name


# --- names from configs stay under the outputs root ------------------------------------------


ESCAPE = (
    "name='../../evil' becomes a folder name under paths.root; expected letters, digits "
    "and '_', '.', '-' only (not '.' or '..')"
)


def test_a_name_cannot_lead_outside_the_outputs_root(tmp_path):
    root = tmp_path / "outputs"
    proc = train("experiment=tiny", f"paths.root={root}", "name=../../evil", "dry_run=true")
    assert proc.returncode != 0
    assert ESCAPE in proc.stderr
    assert list(tmp_path.iterdir()) == []  # neither the outputs root nor anything beside it


def test_a_sweep_name_cannot_lead_outside_the_outputs_root():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["name=../../evil"], return_hydra_config=True)
    with pytest.raises(InterpolationResolutionError, match=re.escape(ESCAPE)):
        OmegaConf.select(cfg, "hydra.sweep.dir")


def test_sweep_job_folders_stay_in_the_sweep_folder(tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"prompt": f"What is {i} + 1?", "response": f"#### {i + 1}"} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A relative path that climbs far above the project: as a folder name it would climb too.
    climbing = "../" * 12 + str(data).lstrip("/")
    sweep = tmp_path / "sweep"
    proc = train(
        "-m",
        "experiment=tiny",
        "dry_run=true",
        "data=jsonl",
        f"data.path={climbing}",
        "data.n_test=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr
    (job,) = [p.parent for p in tmp_path.rglob(".hydra")]
    assert job.parent == sweep
    assert "data.path=.._.._" in job.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "sweep"]
