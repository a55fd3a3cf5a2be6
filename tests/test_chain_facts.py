"""Facts of the chain that a wrong result would break silently, checked on the exact world,
where every response's probability is known: what a pair holds, which pairs iteration 2
trains on, that the first step's rewards are zero under mixed precision, that identical
pairs are dropped and counted, and that one SPIN iteration moves the model toward p_data in
the direction of the theorem's update."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, train_in_process

from spin.artifacts import read_json
from spin.data import load_splits
from spin.data.world import World
from spin.errors import DataError
from spin.models import load_model
from spin.reporting.exact_world import model_folder
from spin.stages.prompts import formatter
from spin.stages.reference import encode_pairs
from spin.theory import saved_model_log_probs, theorem_step, within_language
from spin.tracking import read_metrics

# Two prompts, six responses each: every pair set covers each prompt many times.
TINY_WORLD = (
    "experiment=exact_world",
    "logger=none",
    "data.world.symbols=ab",
    "data.world.prompt_length=1",
    "data.world.max_response_length=2",
    "data.world.strength=3.0",
    "data.n_test=2",
    "model.shape.hidden_size=32",
    "model.shape.intermediate_size=64",
)


# bf16 keeps 8 bits of mantissa: a relative rounding of 2^-8.
BF16_RELATIVE = 2.0**-8


def job_report(root: Path) -> dict:
    (path,) = root.glob("runs/*/*/report.json")
    return read_json(path)


def spec(root: Path, kind: str, key: str) -> dict:
    return read_json(root / "artifacts" / kind / key / "spec.json")


def references(root: Path, report: dict) -> list[dict]:
    """The reference pass (pair set) spec of each iteration the job reports."""
    models = [spec(root, "model", row["model_key"]) for row in report["rows"][1:]]
    return [spec(root, "reference", m["reference"]) for m in models]


@pytest.fixture(scope="module")
def greedy_chain(tmp_path_factory) -> Path:
    """Three greedy iterations with t-1 mixing, trained in bf16 over fp32 master weights."""
    root = tmp_path_factory.mktemp("greedy_chain")
    train_in_process(
        *TINY_WORLD,
        "generation=greedy",
        "data.n_train=12",
        "sft.n_train=64",
        "sft.epochs=2",
        "trainer.precision=bf16",
        "trainer.batch_size=8",
        "iter=2",
        f"paths.root={root}",
    )
    return root


def test_pairs_hold_the_data_answer_and_the_iterate_s_own_completion(greedy_chain):
    report = job_report(greedy_chain)
    cfg = compose_config(*TINY_WORLD, "data.n_train=12")
    records = load_splits(cfg.data).train
    parents = [report["rows"][0]["model_key"]] + [r["model_key"] for r in report["rows"][1:-1]]
    for parent, ref in zip(parents, references(greedy_chain, report), strict=True):
        generations = spec(greedy_chain, "generations", ref["generations"][0])
        assert generations["model"] == parent  # iteration t generates with M_t
        pairs_file = greedy_chain / "artifacts" / "generations" / ref["generations"][0]
        pairs = [json.loads(line) for line in (pairs_file / "pairs.jsonl").open()]
        assert [(p["prompt"], p["real"]) for p in pairs] == [
            (r["prompt"], r["response"]) for r in records
        ]
        model, tokenizer = load_model(model_folder(greedy_chain, parent))
        fmt = formatter(cfg, tokenizer)
        for pair in pairs[:4]:
            ids = torch.tensor([fmt.prompt_ids(pair["prompt"], 16)])
            out = model.generate(ids, do_sample=False, max_new_tokens=8)
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            assert pair["generated"] == text


def test_iteration_two_trains_on_its_pairs_and_iteration_one_s(greedy_chain):
    report = job_report(greedy_chain)
    refs = references(greedy_chain, report)
    own = [ref["generations"][0] for ref in refs]
    assert refs[0]["generations"] == own[:1]
    assert refs[1]["generations"] == [own[1], own[0]]
    assert refs[2]["generations"] == [own[2], own[1]]  # t-1 mixing: not iteration 0's pairs


def test_first_step_rewards_are_zero_under_mixed_precision(greedy_chain):
    """Before its first update the policy is the reference, so each iteration's first
    rewards are zero: exactly in fp32, and under bf16 autocast within bf16's rounding of the
    log-probabilities (the reference pass batches pairs differently). A reference from
    another model, or scored without the autocast training uses, is off by far more."""
    (job,) = greedy_chain.glob("runs/*/*")
    rows = [r for r in read_metrics(job) if "train/rewards/real" in r]
    firsts = {}
    for row in rows:
        firsts.setdefault(row["iteration"], row)
    assert sorted(firsts) == [0, 1, 2]
    beta = 0.1
    for row in firsts.values():
        for side in ("real", "generated"):
            gap = abs(row[f"train/rewards/{side}"]) / beta  # nats between policy and reference
            assert gap <= BF16_RELATIVE * abs(row[f"train/logps/{side}"]), (side, row)


def test_identical_pairs_are_counted_and_dropped_and_none_left_is_an_error():
    cfg = compose_config(*TINY_WORLD, "spin.drop_identical=true")
    _, tokenizer = load_model_tokenizer()
    rows = [
        {"prompt": "a", "real": "ab", "generated": "ab", "identical": True},
        {"prompt": "b", "real": "a", "generated": "bb", "identical": False},
    ]
    examples, n_identical = encode_pairs(cfg, tokenizer, rows)
    assert n_identical == 1 and len(examples) == 1
    kept_cfg = compose_config(*TINY_WORLD)
    assert len(encode_pairs(kept_cfg, tokenizer, rows)[0]) == 2
    with pytest.raises(DataError, match="no training pairs left: all 1 generated"):
        encode_pairs(cfg, tokenizer, rows[:1])


def load_model_tokenizer():
    from spin.models import build_tiny

    return build_tiny()


def log_distribution(cfg, directory: str, world: World, prompts: list[str]) -> np.ndarray:
    """A model's log-probabilities over the language after each prompt, renormalised."""
    return within_language(saved_model_log_probs(cfg, directory, world, prompts))


@pytest.fixture(scope="module")
def far_start(tmp_path_factory) -> str:
    """An SFT model that has learned the language's form from plenty of data, but from
    another world (seed 1): its distribution is far from this world's p_data."""
    root = tmp_path_factory.mktemp("far_start")
    train_in_process(
        *TINY_WORLD,
        "data.world.seed=1",
        "baseline=sft",
        "eval=none",
        "sft.n_train=2048",
        "sft.epochs=2",
        f"paths.root={root}",
    )
    (sft,) = [p.parent for p in root.glob("artifacts/model/*/model/config.json")]
    return str(sft)


@pytest.mark.parametrize("seed", [0, 1])
def test_one_sampled_iteration_moves_toward_p_data_along_the_theorem(far_start, tmp_path, seed):
    """One SPIN iteration against the model's own samples (beta 1, where the theorem's
    update lands on p_data) must cut the forward KL by far more than seed noise, and move
    the model's distribution along that update."""
    overrides = (
        *TINY_WORLD,
        "model.source=hub",
        f"model.path={far_start}",
        "sft.enabled=false",
        "data.n_train=256",
        "loss.beta=1.0",
        "trainer.lr=2e-3",
        "trainer.epochs=2",
    )
    train_in_process(*overrides, f"seed={seed}", f"paths.root={tmp_path}")
    report = job_report(tmp_path)
    before, after = (row["scores"]["world_kl_fwd"] for row in report["rows"])
    assert after < 0.8 * before, (before, after)
    cfg = compose_config(*overrides)
    world = World(cfg.data.world)
    prompts = ["a", "b"]
    log_p = np.stack([world.log_probs(x) for x in prompts])
    log_q0 = log_distribution(cfg, far_start, world, prompts)
    log_q1 = log_distribution(
        cfg, model_folder(tmp_path, report["rows"][1]["model_key"]), world, prompts
    )
    # Directions in probability space, where the responses the model and data care about
    # weigh the most (log-space differences of near-impossible responses are noise).
    moved = np.exp(log_q1) - np.exp(log_q0)
    wanted = np.exp(theorem_step(log_q0, log_p, 1.0)) - np.exp(log_q0)
    cosine = (moved * wanted).sum(-1) / (
        np.linalg.norm(moved, axis=-1) * np.linalg.norm(wanted, axis=-1)
    )
    assert (cosine > 0.5).all(), cosine
