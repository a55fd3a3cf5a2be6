"""An iteration trained on given pairs (``spin.given_pairs``), as on the authors' released
UCLA-AGI/SPIN_iter0: a local copy in the hub layout stands in for the hub data set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import artifact_events, compose_config, job_dirs, train_in_process
from datasets import Dataset, load_from_disk

from spin.config import GivenPairsConfig
from spin.data import load_given_pairs
from spin.errors import ConfigError, DataError
from spin.models import build_tiny_tokenizer
from spin.validation import validate

PAIRS = [
    ("What is 2 + 3?", "2 + 3 = 5\n#### 5", "2 + 3 = 6\n#### 6"),
    ("What is 7 - 4?", "7 - 4 = 3\n#### 3", "7 - 4 = 3\n#### 3"),
    ("What is 6 * 2?", "6 * 2 = 12\n#### 12", "6 * 2 = 8\n#### 8"),
    ("What is 9 / 3?", "9 / 3 = 3\n#### 3", "9 / 3 = 4\n#### 4"),
    ("What is 5 + 5?", "5 + 5 = 10\n#### 10", ""),  # a model may stop at once: kept
]


def chat(prompt: str, reply: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def released_row(prompt: str, real: str, generated: str) -> dict:
    """A row as uclaml/SPIN's spin/generate.py writes it."""
    return {"real": chat(prompt, real), "generated": chat(prompt, generated)}


def write_released(folder: Path, rows: list[dict]) -> Path:
    """A data set in the hub layout: ``data/train-00000-of-00001.parquet``."""
    (folder / "data").mkdir(parents=True)
    Dataset.from_list(rows).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    return folder


def expected_pairs() -> list[dict[str, str]]:
    return [{"prompt": p, "real": r, "generated": g} for p, r, g in PAIRS]


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """The five pairs, the first one repeated (users report duplicated released rows)."""
    rows = [released_row(*pair) for pair in PAIRS]
    return write_released(tmp_path_factory.mktemp("SPIN_iter0"), [*rows, rows[0]])


def given(path: Path, **fields) -> GivenPairsConfig:
    return GivenPairsConfig(path=str(path), **fields)


def test_released_layout_gives_each_prompt_once(released):
    pairs, source = load_given_pairs(given(released), "spin.given_pairs.0")
    assert pairs == expected_pairs()
    assert source["rows"] == 6 and source["repeated_prompts"] == 1


def test_repeats_are_counted_and_kept_without_deduplication(released):
    pairs, source = load_given_pairs(given(released), "spin.given_pairs.0", drop_repeats=False)
    assert pairs == [*expected_pairs(), expected_pairs()[0]]
    assert source["repeated_prompts"] == 1 and not source["repeats_dropped"]


def test_n_draws_pairs_in_file_order(released):
    pairs, _ = load_given_pairs(given(released, n=3), "spin.given_pairs.0")
    assert len(pairs) == 3
    positions = [expected_pairs().index(p) for p in pairs]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"real": chat("Q", "A"), "generated": [{"role": "user", "content": "Q"}]}, "generated"),
        ({"real": chat("Q", ""), "generated": chat("Q", "B")}, "real[1].content"),
        ({"real": chat("Q", "A"), "generated": chat("Other", "B")}, "generated"),
        ({"real": "Q A", "generated": chat("Q", "B")}, "real"),
    ],
)
def test_malformed_row_names_line_and_field(tmp_path, bad, field):
    path = tmp_path / "pairs.jsonl"
    lines = [released_row(*PAIRS[0]), bad]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    with pytest.raises(DataError, match=rf"pairs\.jsonl line 2: .*'{re.escape(field)}"):
        load_given_pairs(given(path), "spin.given_pairs.0")


def test_malformed_parquet_row_names_data_set_and_row(tmp_path):
    rows = [released_row(*PAIRS[0]), released_row("Q", "", "B")]
    folder = write_released(tmp_path / "set", rows)
    with pytest.raises(DataError, match=r"set split 'train' row 1: field 'real\[1\]\.content'"):
        load_given_pairs(given(folder), "spin.given_pairs.0")


def test_missing_column_is_named(released):
    with pytest.raises(DataError, match="field 'chosen' is missing"):
        load_given_pairs(given(released, real_field="chosen"), "spin.given_pairs.0")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+spin.given_pairs.0.n=0", r"spin\.given_pairs\.0\.n=0"),
        ("+spin.given_pairs.0.fields=x", r"spin\.given_pairs\.0\.fields is not a known key"),
        ("+spin.given_pairs.first.path=x", r"spin\.given_pairs\.first: keys are iteration"),
        ("+spin.given_pairs.1.split=test", r"spin\.given_pairs\.1\.path is required"),
    ],
)
def test_config_errors_name_the_key(override, message):
    cfg = compose_config("experiment=tiny", "+spin.given_pairs.0.path=x", override)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


# ------------------------------------------------------------------ the chain, via train.py
def job_args(root: Path, released: Path, *overrides: str) -> list[str]:
    given = f"+spin.given_pairs.0.path={released}"
    return ["experiment=tiny", f"paths.root={root}", "eval=none", given, *overrides]


@pytest.fixture(scope="module")
def chain_root(tmp_path_factory, released) -> Path:
    """Iteration 0 on the given pairs, iteration 1 generated and mixed with them."""
    root = tmp_path_factory.mktemp("given")
    train_in_process(*job_args(root, released, "iter=1"))
    return root


def read(path: Path, name: str) -> dict:
    return json.loads((path / name).read_text())


def by_spec(root: Path, kind: str) -> dict[str, tuple[Path, dict]]:
    """Artifact key -> (folder, spec) of every artifact of ``kind`` under ``root``."""
    folders = (p for p in (root / "artifacts" / kind).glob("*") if p.is_dir())
    return {p.name: (p, read(p, "spec.json")) for p in folders}


def test_iteration_zero_trains_on_exactly_the_given_pairs(chain_root):
    ((key, (given_set, _)),) = by_spec(chain_root, "given_pairs").items()
    rows = [json.loads(line) for line in (given_set / "pairs.jsonl").read_text().splitlines()]
    assert [{k: r[k] for k in ("prompt", "real", "generated")} for r in rows] == expected_pairs()
    recorded = read(given_set, "stats.json")
    assert recorded["source"]["repeated_prompts"] == 1 and recorded["source"]["repeats_dropped"]
    assert recorded["identical_fraction"] == pytest.approx(1 / 5)

    refs = by_spec(chain_root, "reference")
    ((ref_key, (ref, ref_spec)),) = [
        (k, v) for k, v in refs.items() if v[1]["generations"] == [key]
    ]
    models = by_spec(chain_root, "model")
    assert "parent" not in models[ref_spec["model"]][1]  # the reference is the start model
    assert any(s.get("reference") == ref_key for _, s in models.values())
    tokenizer = build_tiny_tokenizer()
    encoded = load_from_disk(str(ref / "pairs"))
    assert len(encoded) == len(PAIRS)
    for example, (prompt, real, generated) in zip(encoded, PAIRS, strict=True):
        for side, reply in (("real", real), ("generated", generated)):
            ids, mask = example[f"{side}_input_ids"], example[f"{side}_response_mask"]
            asked, answered = split_decoded(tokenizer, ids, mask)
            assert prompt in asked and answered == reply


def split_decoded(tokenizer, ids: list[int], mask: list[int]) -> tuple[str, str]:
    """The prompt and the response (without the end-of-turn token) of an encoded pair side."""
    prompt = [i for i, m in zip(ids, mask, strict=True) if not m]
    response = [i for i, m in zip(ids, mask, strict=True) if m]
    return tokenizer.decode(prompt), tokenizer.decode(response, skip_special_tokens=True).strip()


def test_iteration_one_generates_and_mixes_with_the_given_pairs(chain_root):
    (given_key,) = by_spec(chain_root, "given_pairs")
    ((gen_key, (generated, gen_spec)),) = by_spec(chain_root, "generations").items()
    models = by_spec(chain_root, "model")
    assert "parent" in models[gen_spec["model"]][1]  # M_1 generated, not the start model
    assert read(generated, "stats.json")["n"] == 16  # the data's train prompts
    refs = by_spec(chain_root, "reference")
    ((ref, _),) = [v for v in refs.values() if v[1]["generations"] == [gen_key, given_key]]
    assert read(ref, "stats.json")["n_pairs"] == 16 + len(PAIRS)


def test_report_has_no_generation_cost_for_given_pairs(chain_root):
    (job,) = job_dirs(chain_root)
    rows = {r["label"]: r for r in read(job, "report.json")["rows"]}
    assert rows["SPIN iteration 0"]["costs"]["generation_s"] is None
    assert rows["SPIN iteration 1"]["costs"]["generation_s"] > 0


def test_generation_settings_leave_given_pairs_and_their_training_alone(chain_root, released):
    before = len(artifact_events(chain_root))
    train_in_process(*job_args(chain_root, released, "iter=0", "generation=sampling"))
    rerun = artifact_events(chain_root)[before:]
    assert {e["kind"] for e in rerun} == {"model", "given_pairs", "reference"}
    assert not any(e["built"] for e in rerun)


def test_malformed_row_stops_the_job_before_any_model_work(tmp_path):
    path = tmp_path / "SPIN_iter0.jsonl"
    bad = {"real": chat("Q", "A"), "generated": [{"role": "user", "content": "Q"}]}
    path.write_text(json.dumps(released_row(*PAIRS[0])) + "\n" + json.dumps(bad) + "\n")
    proc = train_in_process(*job_args(tmp_path, path), check=False)
    assert proc.returncode != 0
    assert "SPIN_iter0.jsonl line 2" in proc.stderr and "'generated'" in proc.stderr
    assert not (tmp_path / "artifacts").exists()
