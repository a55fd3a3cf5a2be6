"""``model.revision``: the hub revision of the start model reaches every load of the model and
its tokenizer, and its artifact key, without changing the keys of runs that set none."""

from __future__ import annotations

import pytest
from conftest import compose_config

from spin import models
from spin.stages.context import Context
from spin.stages.loading import ModelRef
from spin.stages.prompts import check_prompts
from spin.stages.scoring import identity
from spin.stages.start import base_model
from spin.tracking import SilentTracker

PINNED = "ac6e600eefcce74f5e8bae1035d4f66019e93190"
# The start model's key for model=zephyr-7b-sft-full before model.revision existed (computed
# with the code of commit e97de00): runs made then must find their artifacts.
KEY_BEFORE_REVISION = "116c6c39fe61a94d"


def test_paper_preset_pins_the_sft_revision():
    cfg = compose_config("experiment=paper_zephyr")
    assert cfg.model.path == "alignment-handbook/zephyr-7b-sft-full"
    assert cfg.model.revision == PINNED


def context(tmp_path, *overrides: str) -> Context:
    cfg = compose_config(
        "model=zephyr-7b-sft-full", "eval=none", f"paths.root={tmp_path}", *overrides
    )
    return Context(cfg, SilentTracker())


def test_revision_is_in_the_start_models_key_only_when_set(tmp_path):
    unpinned = base_model(context(tmp_path, "model.revision=null"))
    assert unpinned.key == KEY_BEFORE_REVISION
    pinned = base_model(context(tmp_path))
    other = base_model(context(tmp_path, "model.revision=main"))
    assert len({unpinned.key, pinned.key, other.key}) == 3
    assert pinned.location == "alignment-handbook/zephyr-7b-sft-full"


@pytest.fixture
def loads(monkeypatch, tiny):
    """Every from_pretrained call of spin.models as (location, revision), answered with the
    tiny model, so no hub is needed."""
    calls: list[tuple[str, str | None]] = []
    model, tokenizer = tiny

    def record(answer):
        def from_pretrained(location, *args, revision=None, **kwargs):
            calls.append((str(location), revision))
            return answer

        return from_pretrained

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", record(model))
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", record(tokenizer))
    return calls


def test_revision_reaches_every_load_of_a_hub_model(tmp_path, loads):
    ctx = context(tmp_path)
    start = base_model(ctx)
    ctx.models.load(start)
    ctx.models.load_private(start, 0)
    check_prompts(ctx.cfg, start, ["What is 2 + 2?"], "test")
    hub = "alignment-handbook/zephyr-7b-sft-full"
    # Model and tokenizer of load and load_private, the tokenizer of the prompt check.
    assert loads == [(hub, PINNED)] * 5
    assert identity(ctx.cfg, start) == {"path": hub, "revision": PINNED, "key": start.key}


def test_a_local_directory_is_loaded_as_it_is(tmp_path, loads):
    ctx = context(tmp_path)
    trained = ModelRef("k", str(tmp_path))
    ctx.models.load(trained)
    assert loads == [(str(tmp_path), None)] * 2
    assert identity(ctx.cfg, trained)["revision"] is None
