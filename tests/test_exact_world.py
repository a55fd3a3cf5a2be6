"""The exact world: its p_data, the divergences computed from a model's log-likelihoods, the
theorem's closed form, and the chain's eval reporting them (against hand-computed values and
a direct computation)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from conftest import compose_config, train_in_process

from evaluation.exact import exact_metrics, greedy_choice
from spin.artifacts import read_json
from spin.config import WorldConfig
from spin.data import load_splits
from spin.data.world import World, distinct_prompts, generate_world
from spin.errors import ConfigError, DataError
from spin.models import build_tiny
from spin.reporting.exact_world import model_folder, write_exact_world
from spin.stages.prompts import formatter
from spin.theory import (
    forward_kl,
    model_log_probs,
    saved_model_log_probs,
    theorem_step,
    trajectory,
)

SMALL = WorldConfig(symbols="ab", prompt_length=1, max_response_length=2, strength=2.0)


def test_probabilities_are_the_chain_s_products_by_hand():
    world = World(SMALL)
    t = world.table("b")  # rows: start, after a, after b; columns: a, b, end
    assert t[0, 2] == 0 and np.allclose(t.sum(axis=1), 1)
    assert world.log_prob("b", "a") == pytest.approx(math.log(t[0, 0] * t[1, 2]))
    assert world.log_prob("b", "ab") == pytest.approx(math.log(t[0, 0] * t[1, 1]))  # end forced
    assert world.log_prob("b", "bba") == -math.inf  # longer than the language allows
    assert world.log_prob("b", "ac") == -math.inf
    assert world.responses == ["a", "b", "aa", "ab", "ba", "bb"]
    assert np.exp(world.log_probs("b")).sum() == pytest.approx(1.0)


def test_entropy_and_length_by_dynamic_programming_match_enumeration():
    world = World(WorldConfig(symbols="abc", prompt_length=2, max_response_length=4, seed=3))
    for prompt in ("ab", "cc"):
        log_p = world.log_probs(prompt)
        p = np.exp(log_p)
        assert world.entropy(prompt) == pytest.approx(float(-(p * log_p).sum()), abs=1e-10)
        tokens = np.array([len(y) + 1 for y in world.responses])
        assert world.expected_tokens(prompt) == pytest.approx(float(p @ tokens), abs=1e-10)


def test_samples_follow_p_data():
    world = World(SMALL)
    rng = np.random.default_rng(0)
    counts = Counter(world.sample_many("a", 20_000, rng))
    p = np.exp(world.log_probs("a"))
    for y, expected in zip(world.responses, p, strict=True):
        assert counts[y] / 20_000 == pytest.approx(expected, abs=0.015)


def test_the_prompt_shapes_the_response_only_with_strength():
    flat = World(WorldConfig(symbols="abc", prompt_length=2, strength=0.0))
    shaped = World(WorldConfig(symbols="abc", prompt_length=2, strength=2.0))
    assert np.allclose(flat.log_probs("ab"), flat.log_probs("ca"))
    assert forward_kl(shaped.log_probs("ab"), shaped.log_probs("ca")) > 0.1


def test_data_nests_and_the_test_prompts_stay_put():
    small_train, small_test = generate_world(replace(SMALL, test_samples=3), 10, 2, seed=1)
    train, test = generate_world(replace(SMALL, test_samples=3), 50, 2, seed=1)
    assert train[:10] == small_train and test == small_test
    assert len({r["prompt"] for r in test}) == 2 and len(test) == 6


def test_bad_world_settings_name_the_key():
    from spin.validation import validate

    with pytest.raises(ConfigError, match=r"data.world.symbols='aa': expected at least two"):
        validate(compose_config("experiment=exact_world", "data.world.symbols=aa"))
    with pytest.raises(ConfigError, match=r"data.world.temperature"):
        validate(compose_config("experiment=exact_world", "data.world.temperature=0"))
    with pytest.raises(ConfigError, match=r"data.world: 29523 responses per prompt"):
        validate(compose_config("experiment=exact_world", "data.world.max_response_length=9"))
    with pytest.raises(ConfigError, match=r"model.shape.hidden_size=64 is not a multiple of"):
        validate(compose_config("experiment=exact_world", "model.shape.heads=3"))
    with pytest.raises(ConfigError, match=r"model.shape.layers=0: expected"):
        validate(compose_config("experiment=exact_world", "model.shape.layers=0"))
    with pytest.raises(DataError, match=r"data.n_test=3: the world has 2 distinct prompts"):
        generate_world(SMALL, 4, 3, seed=0)
    with pytest.raises(ConfigError, match=r"eval.exact=true needs data.source=world"):
        validate(compose_config("eval.exact=true", "logger=none"))


def test_divergences_from_hand_computed_distributions():
    # p over three responses; the model puts a quarter of its mass outside the language.
    choices = ["a", "b", "ab"]
    p = np.array([0.5, 0.25, 0.25])
    q = np.array([0.25, 0.25, 0.25])
    counts = np.array([2, 0, 2])
    tokens = np.array([2.0, 2.0, 3.0])
    m = exact_metrics(np.log(q), np.log(p), counts, choices, tokens)
    assert m["kl_fwd"] == pytest.approx(0.5 * math.log(2))
    assert m["kl_fwd_token"] == pytest.approx(0.5 * math.log(2) / 2.25)
    third = 1 / 3  # the model renormalised over the language
    expected_rev = sum(third * (math.log(third) - math.log(v)) for v in p)
    assert m["kl_rev"] == pytest.approx(expected_rev)
    assert m["tv"] == pytest.approx(0.25) and m["mass_out"] == pytest.approx(0.25)
    assert m["entropy"] == pytest.approx(math.log(3))
    assert m["logp_data_model"] == pytest.approx(np.mean(np.log(p)))
    assert m["kl_emp"] == pytest.approx(2 * 0.5 * (math.log(0.5) - math.log(0.25)))


def test_greedy_decoding_follows_prefix_mass_not_the_mode():
    choices = ["a", "b", "aa", "ab", "ba", "bb"]
    probs = np.array([0.1, 0.4, 0.3, 0.2, 0.0, 0.0])  # mode "b", but "a..." holds 0.6
    assert choices[greedy_choice(choices, probs)] == "aa"
    probs = np.array([0.5, 0.1, 0.2, 0.2, 0.0, 0.0])  # ending after "a" beats going on
    assert choices[greedy_choice(choices, probs)] == "a"


def test_theorem_closed_form_regimes():
    rng = np.random.default_rng(0)
    log_p = np.log(rng.dirichlet(np.ones(50)))
    noise = np.log(rng.dirichlet(np.ones(50)))
    log_q0 = np.log(0.6 * np.exp(log_p) + 0.4 * np.exp(noise))
    one = trajectory(log_q0, log_p, beta=1.0, steps=1)
    assert forward_kl(log_p, one[1]) == pytest.approx(0.0, abs=1e-12)  # lands in one step
    kl = [forward_kl(log_p, q) for q in trajectory(log_q0, log_p, beta=0.5, steps=4)]
    assert kl[0] == pytest.approx(kl[2]) and kl[1] == pytest.approx(kl[3])  # cycles
    assert kl[1] < kl[0]
    kl = [forward_kl(log_p, q) for q in trajectory(log_q0, log_p, beta=0.7, steps=4)]
    assert all(b < a for a, b in itertools.pairwise(kl))  # approaches
    kl = [forward_kl(log_p, q) for q in trajectory(log_q0, log_p, beta=0.1, steps=2)]
    assert kl[1] > 5 * kl[0]  # the paper's beta is repelled
    assert np.allclose(theorem_step(log_p, log_p, 0.1), log_p)  # p_data is a fixed point


WORLD_RUN = (
    "experiment=exact_world",
    "logger=none",
    "data.world.symbols=ab",
    "data.world.prompt_length=2",
    "data.world.max_response_length=3",
    "data.n_train=16",
    "data.n_test=4",
    "sft.n_train=32",
    "sft.epochs=1",
)


@pytest.fixture(scope="module")
def world_runs(tmp_path_factory):
    """Two seeds of a small exact-world chain through iteration 1, and what each printed."""
    root = tmp_path_factory.mktemp("world_runs")
    outputs = [
        train_in_process(*WORLD_RUN, "iter=1", f"seed={seed}", f"paths.root={root}").stdout
        for seed in (0, 1)
    ]
    return root, outputs


def test_chain_reports_the_exact_divergences_of_each_model(world_runs):
    """The eval's exact measures equal those computed directly from the model's distribution,
    and print beside the usual table."""
    tmp_path, outputs = world_runs
    assert "world_kl_fwd" in outputs[0] and "world_train_kl_emp" in outputs[0]
    report = min(tmp_path.glob("runs/exact_world/*/report.json"))
    rows = read_json(report)["rows"]
    cfg = compose_config(*WORLD_RUN, f"paths.root={tmp_path}")
    splits = load_splits(cfg.data)
    world = World(cfg.data.world)
    prompts = distinct_prompts(splits.test)
    log_p = np.stack([world.log_probs(x) for x in prompts])
    for row in rows:  # the SFT model and iteration 0
        directory = model_folder(tmp_path, row["model_key"])
        log_q = saved_model_log_probs(cfg, directory, world, prompts)
        assert row["scores"]["world_kl_fwd"] == pytest.approx(
            float(forward_kl(log_p, log_q).mean()), rel=1e-4
        )


def test_untrained_tiny_model_puts_mass_outside_the_language():
    model, tokenizer = build_tiny()
    cfg = compose_config(*WORLD_RUN)
    world = World(cfg.data.world)
    log_q = model_log_probs(model, formatter(cfg, tokenizer), world, ["ab"], 16, 32)
    assert np.exp(log_q).sum() < 0.5


def test_study_report_tabulates_kl_theory_and_steps(world_runs):
    """The study's report over two seeds: the KL tables with seed ranges, the theorem's
    trajectory from the SFT model, each iteration's effective step, and the plots."""
    tmp_path, _ = world_runs
    written = write_exact_world([tmp_path / "runs"], tmp_path / "report", steps=3)
    text = (tmp_path / "report" / "exact_world.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| SFT N=32"))
    assert "| 2 |" in row and row.count("[") == 3  # two seeds: a range for SFT and iterations
    theory = [line for line in text.splitlines() if line.startswith("| SFT N=32 x1 ep | 1 |")]
    assert len(theory) == 1 and float(theory[0].split("|")[4]) < 1e-9  # beta 1: p_data at once
    assert {p.name for p in written} >= {"exact_world_kl_fwd.png", "exact_world_train_kl_emp.png"}
