"""Baselines (SFT, further SFT, DPO, SPIN + DPO), the SFT stage and the opponent variants,
run on the tiny model as a user runs them: train.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_in_process
from datasets import load_from_disk

from spin.artifacts import Artifact
from spin.data import PromptFormatter, generate_arith
from spin.models import load_model
from spin.pairs import draw_pairs, mixed_reference, write_pairs
from spin.sft import encode_sft

TINY = ("experiment=tiny", "eval.limit=2")


def report(root: Path) -> dict:
    (path,) = root.rglob("report.json")
    return json.loads(path.read_text())


def artifacts(root: Path, kind: str) -> dict[str, dict]:
    """key -> spec of every artifact of ``kind``."""
    return {
        p.parent.name: json.loads(p.read_text())
        for p in (root / "artifacts" / kind).glob("*/spec.json")
    }


def losses(root: Path, key: str) -> list[float]:
    history = json.loads((root / "artifacts" / "model" / key / "history.json").read_text())
    return [e["loss"] for e in history if "loss" in e]


def test_dpo_is_the_spin_loss_with_chosen_and_rejected_for_real_and_generated(tmp_path):
    """DPO on preference pairs made of SPIN iteration 0's own pairs (real as chosen,
    generated as rejected) trains exactly the model SPIN iteration 0 trains."""
    spin_root, dpo_root = tmp_path / "spin", tmp_path / "dpo"
    train_in_process(*TINY, f"paths.root={spin_root}", "loss=sigmoid", "iter=0")
    (gen,) = (spin_root / "artifacts" / "generations").glob("*/pairs.jsonl")
    prefs = tmp_path / "prefs.jsonl"
    with prefs.open("w") as f:
        for line in gen.read_text().splitlines():
            row = json.loads(line)
            f.write(
                json.dumps(
                    {"prompt": row["prompt"], "chosen": row["real"], "rejected": row["generated"]}
                )
                + "\n"
            )
    train_in_process(
        *TINY,
        f"paths.root={dpo_root}",
        "baseline=dpo",
        "baseline.preferences.source=jsonl",
        f"baseline.preferences.path={prefs}",
        "baseline.loss=sigmoid",
        "baseline.beta=0.1",
        "baseline.lr=1e-3",
        "baseline.epochs=1",
    )
    spin_row = report(spin_root)["rows"][-1]
    dpo_row = report(dpo_root)["rows"][-1]
    assert (spin_row["label"], dpo_row["label"]) == ("SPIN iteration 0", "DPO")
    spin_losses = losses(spin_root, spin_row["model_key"])
    assert len(spin_losses) > 1
    assert losses(dpo_root, dpo_row["model_key"]) == pytest.approx(spin_losses, abs=1e-6)
    assert dpo_row["scores"] == pytest.approx(spin_row["scores"])


def test_baselines_report_their_rows_and_share_the_sft_model(tmp_path):
    train_in_process(
        "-m", *TINY, f"paths.root={tmp_path}", "baseline=sft,sft_more,dpo,spin_dpo", "iter=1"
    )
    reports = {
        r["settings"]["baseline"]: r
        for r in map(json.loads, (p.read_text() for p in tmp_path.rglob("report.json")))
    }
    labels = {name: [row["label"] for row in r["rows"]] for name, r in reports.items()}
    assert labels == {
        "sft": ["SFT"],
        "sft_more": ["SFT", "SFT + more epochs"],
        "dpo": ["SFT", "DPO"],
        "spin_dpo": ["SFT", "SPIN iteration 0", "SPIN iteration 1", "SPIN iteration 1 + DPO"],
    }
    assert len({r["rows"][0]["model_key"] for r in reports.values()}) == 1
    # the SFT model is scored once for all four jobs
    starts = [
        s
        for s in artifacts(tmp_path, "eval").values()
        if s["model"] == reports["sft"]["rows"][0]["model_key"]
    ]
    assert len(starts) == 1
    dpo = reports["dpo"]["rows"][1]
    assert dpo["costs"]["train_s"] > 0 and dpo["costs"]["tokens_trained"] > 0
    assert dpo["curves"] and "rewards/margins" in dpo["curves"][0]
    spin_dpo = reports["spin_dpo"]["rows"]
    # SPIN + DPO starts from SPIN iteration 1's model
    parents = {k: s.get("parent") for k, s in artifacts(tmp_path, "model").items()}
    assert parents[spin_dpo[3]["model_key"]] == spin_dpo[2]["model_key"]


def test_sft_stage_fine_tunes_the_start_model_on_the_train_split(tmp_path):
    train_in_process(
        *TINY,
        f"paths.root={tmp_path}",
        "sft.enabled=true",
        "sft.n_train=24",
        "sft.lr=1e-2",
        "sft.epochs=2",
        "sft.batch_size=4",
        "eval=none",
    )
    rows = report(tmp_path)["rows"]
    models = artifacts(tmp_path, "model")
    sft_key = rows[0]["model_key"]
    base_key = models[sft_key]["parent"]
    assert "sft_data" in models[sft_key]
    # iteration 0 generates with, and trains from, the SFT model
    (gen,) = artifacts(tmp_path, "generations").values()
    assert gen["model"] == sft_key
    assert models[rows[1]["model_key"]]["parent"] == sft_key
    # the SFT model fits its train records better than the model it started from
    train, _ = generate_arith(24, 0, 0, [2, 3])
    nll = {}
    for key in (base_key, sft_key):
        directory = tmp_path / "artifacts" / "model" / key
        model, tokenizer = load_model(
            str(directory / "model" if (directory / "model").is_dir() else directory),
            "float32",
            False,
        )
        data = encode_sft(PromptFormatter(tokenizer), train, 384, 640)
        with torch.no_grad():
            total = 0.0
            for row in data:
                ids = torch.tensor([row["input_ids"]])
                total += model(input_ids=ids, labels=torch.tensor([row["labels"]])).loss.item()
        nll[key] = total / len(data)
    assert nll[sft_key] < nll[base_key] - 0.5
    assert rows[0]["costs"]["train_s"] > 0


def test_fictitious_play_draws_each_opponent_from_all_earlier_iterates(tmp_path):
    sets = []
    for index in range(3):
        directory = tmp_path / f"gen{index}"
        directory.mkdir()
        rows = [
            {"prompt": f"p{i}", "real": f"r{i}", "generated": f"g{index}-{i}"} for i in range(40)
        ]
        write_pairs(directory, rows, {"seconds": None, "generated_tokens": None})
        sets.append(Artifact("generations", f"k{index}", directory, built=True))
    drawn = draw_pairs(sets, seed=3)
    assert [r["prompt"] for r in drawn] == [f"p{i}" for i in range(40)]
    sources = [int(r["generated"].split("-")[0][1:]) for r in drawn]
    assert set(sources) == {0, 1, 2}
    assert all(
        r["generated"] == f"g{s}-{i}" for i, (r, s) in enumerate(zip(drawn, sources, strict=True))
    )
    assert draw_pairs(sets, seed=3) == drawn and draw_pairs(sets, seed=4) != drawn


def test_fictitious_play_chain_trains_one_drawn_pair_per_prompt(tmp_path):
    train_in_process(*TINY, f"paths.root={tmp_path}", "opponent=fictitious", "iter=2", "eval=none")
    refs = artifacts(tmp_path, "reference")
    assert sorted(len(s["generations"]) for s in refs.values()) == [1, 2, 3]
    for key, spec in refs.items():
        assert spec["draw_seed"] == len(spec["generations"]) - 1  # opponent.seed + t
        stats = json.loads((tmp_path / "artifacts" / "reference" / key / "stats.json").read_text())
        assert stats["n_pairs"] == 16  # one pair per prompt: no t-1 mixing


def test_fictitious_play_refuses_t_minus_1_mixing(tmp_path):
    proc = train_in_process(
        *TINY,
        f"paths.root={tmp_path}",
        "opponent=fictitious",
        "spin.mix_previous=true",
        "iter=1",
        check=False,
    )
    assert proc.returncode != 0 and "spin.mix_previous=false" in proc.stderr + proc.stdout


def test_kl_mixture_reference_mixes_the_previous_and_start_models(tmp_path):
    train_in_process(
        *TINY,
        f"paths.root={tmp_path}",
        "opponent=kl_mixture",
        "opponent.mixture_weight=0.25",
        "iter=1",
        "eval=none",
    )
    models = artifacts(tmp_path, "model")
    trained = [k for k, s in models.items() if "reference" in s]
    (second,) = [k for k in trained if isinstance(models[k]["reference"], list)]
    (ref_t, w_t), (ref_0, w_0) = models[second]["reference"]
    assert (w_t, w_0) == (0.25, 0.75)
    refs = artifacts(tmp_path, "reference")
    assert refs[ref_t]["generations"] == refs[ref_0]["generations"]
    assert refs[ref_0]["model"] != refs[ref_t]["model"]
    # iteration 0's reference model is the start model: no mixture, one pass
    (first,) = [k for k in trained if k != second]
    assert isinstance(models[first]["reference"], str)
    assert refs[ref_0]["model"] == refs[models[first]["reference"]]["model"]
    directory = tmp_path / "artifacts" / "reference"
    mixed = mixed_reference(
        [
            (Artifact("reference", ref_t, directory / ref_t, built=False), w_t),
            (Artifact("reference", ref_0, directory / ref_0, built=False), w_0),
        ]
    )
    by_t = load_from_disk(str(directory / ref_t / "pairs"))
    by_0 = load_from_disk(str(directory / ref_0 / "pairs"))
    for key in ("ref_real_logps", "ref_generated_logps"):
        expected = [0.25 * a + 0.75 * b for a, b in zip(by_t[key], by_0[key], strict=True)]
        assert mixed[key] == pytest.approx(expected, rel=1e-6)
        assert by_t[key] != pytest.approx(by_0[key])
