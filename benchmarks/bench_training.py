"""SPIN training against TRL's DPOTrainer on identical pairs (real chosen, generated rejected).

Contenders, each in its own process (so its peak resident memory is its own):

- ``spin``: the reference pass (:func:`spin.logprobs.reference_logps`) plus
  :func:`spin.trainer.train_pairs`; both count towards its time.
- ``trl``: ``DPOTrainer`` as shipped, a reference model recomputed every step.
- ``trl-precompute``: ``DPOTrainer`` with ``precompute_ref_log_probs=True`` (its precompute
  pass, done while the trainer is built, counts towards its time).

All run SmolLM2-135M in float32 without gradient checkpointing (TRL's defaults of bf16 and
checkpointing are turned off to match), the sigmoid loss with beta 0.1, RMSprop, the same
learning rate, batch size, pairs and number of steps. Before training, each contender scores
the same parity batch with its own loss code; the parent checks the losses agree within 1e-4
and the mean response log-probabilities (which would differ if the tokenisation did).

The contenders alternate over the repeats (forward, then reversed, ...: no contender always
meets the quietest machine), each run waits for a quiet machine first, and the load at each
run's start is printed beside it; each contender is quoted by its median and spread.

    python benchmarks/bench_training.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset

# The benchmarks' helpers and the repository's packages, whichever directory runs this.
# ruff: noqa: E402  (the imports below need the path above)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import common

CONTENDERS = ("spin", "trl", "trl-precompute")
MODES = {
    "quick": {"pairs": 8, "batch": 4, "repeats": 2},
    "full": {"pairs": 32, "batch": 8, "repeats": 2},
}
PARITY_PAIRS = 2
MAX_LENGTH = 512
BETA = 0.1
LR = 5e-6
SEED = 42


def spin_run(
    pairs: list[dict], batch: int, pad_token_id: int, model, tokenizer, precision: str = "fp32"
) -> dict:
    """The reference pass and SPIN training of ``model`` on ``pairs``, timed; ``precision``
    is the trainer's (``bf16`` autocasts over float32 master weights, as TRL's ``bf16``)."""
    from spin.logprobs import reference_logps
    from spin.trainer import PairCollator, SPINTrainer, train_pairs, training_arguments

    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(
            out,
            lr=LR,
            epochs=1,
            batch_size=batch,
            grad_accumulation=1,
            optimizer="rmsprop",
            lr_scheduler="linear",
            warmup_ratio=0.0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            precision=precision,
            gradient_checkpointing=False,
            seed=SEED,
            logging_steps=1,
        )
        started = time.perf_counter()
        real, generated = reference_logps(
            model, pairs, 2 * batch, pad_token_id, desc="reference", precision=precision
        )
        reference_s = time.perf_counter() - started
        pairs = [
            {**p, "ref_real_logps": r, "ref_generated_logps": g}
            for p, r, g in zip(pairs, real, generated, strict=True)
        ]

        probe = SPINTrainer(
            model=model,
            args=args,
            data_collator=PairCollator(pad_token_id),
            loss_name="sigmoid",
            beta=BETA,
        )
        inputs = PairCollator(pad_token_id)(pairs[:PARITY_PAIRS])
        with torch.no_grad():
            loss, out_logps = probe.compute_loss(model, inputs, return_outputs=True)
        parity = {
            "loss": loss.item(),
            "logps_real": out_logps["policy_real_logps"].mean().item(),
            "logps_generated": out_logps["policy_generated_logps"].mean().item(),
        }
        del probe

        started = time.perf_counter()
        history = train_pairs(model, tokenizer, pairs, args, "sigmoid", BETA, 0.0, 0.0)
        train_s = time.perf_counter() - started
    losses = [h["loss"] for h in history if "loss" in h]
    return {
        "seconds": reference_s + train_s,
        "reference_s": reference_s,
        "train_s": train_s,
        "steps": len(losses),
        "first_step_loss": losses[0],
        "parity": parity,
    }


def trl_run(
    triples: list[dict],
    batch: int,
    precompute: bool,
    model,
    tokenizer,
    precision: str = "fp32",
    ref_model=None,
) -> dict:
    """TRL's DPOTrainer on the same pairs as chat rows, timed from building the trainer
    (tokenisation, and the precompute pass with ``precompute``) to the end of training.
    Without ``ref_model`` TRL loads the reference from the policy's path; a model built in
    code has none, and is given a copy of itself."""
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": t["prompt"]}],
            "chosen": [{"role": "assistant", "content": t["real"]}],
            "rejected": [{"role": "assistant", "content": t["generated"]}],
        }
        for t in triples
    ]
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            learning_rate=LR,
            num_train_epochs=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            optim="rmsprop",
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            bf16=precision == "bf16",
            fp16=False,
            gradient_checkpointing=False,
            seed=SEED,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            beta=BETA,
            loss_type=["sigmoid"],
            max_length=MAX_LENGTH,
            precompute_ref_log_probs=precompute,
            precompute_ref_batch_size=2 * batch if precompute else None,
            dataset_num_proc=None,
            disable_tqdm=True,
        )
        started = time.perf_counter()
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        build_s = time.perf_counter() - started

        features = [trainer.train_dataset[i] for i in range(PARITY_PAIRS)]
        inputs = trainer._prepare_inputs(trainer.data_collator(features))
        trainer.model.train()  # TRL files its metrics under the model's mode
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, inputs)
        metrics = trainer._metrics["train"]
        parity = {
            "loss": loss.item(),
            "logps_real": metrics["logps/chosen"][-1],
            "logps_generated": metrics["logps/rejected"][-1],
        }
        trainer._metrics["train"].clear()

        started = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "seconds": build_s + train_s,
        "build_s": build_s,
        "train_s": train_s,
        "steps": len(losses),
        "first_step_loss": losses[0],
        "parity": parity,
        "activation_checkpointing": bool(args.activation_checkpointing),
    }


def child(contender: str, n_pairs: int, batch: int) -> None:
    """Run one contender and emit its figures."""
    from spin.models import load_model

    torch.manual_seed(SEED)
    model, tokenizer = load_model(common.model_dir())
    triples = common.arith_pairs(n_pairs)
    if contender == "spin":
        pairs = common.encode_pairs(tokenizer, triples, MAX_LENGTH)
        result = spin_run(pairs, batch, tokenizer.pad_token_id, model, tokenizer)
    else:
        result = trl_run(triples, batch, contender == "trl-precompute", model, tokenizer)
    result |= {
        "contender": contender,
        "pairs": n_pairs,
        "pairs_per_s": n_pairs / result["seconds"],
        "peak_rss_mb": common.peak_rss_mb(),
    }
    common.emit(result)


def measure(contender: str, settings: dict) -> dict:
    """One run of ``contender`` in a fresh process, started once the machine is quiet; its
    figures and the load average it started at."""
    load = common.wait_for_quiet()
    args = ["--contender", contender, "--pairs", str(settings["pairs"])]
    result = common.run_child(Path(__file__), [*args, "--batch", str(settings["batch"])])
    return result | {"load": load}


def check_parity(runs: dict[str, list[dict]]) -> None:
    """Every run of every contender scored the parity batch as SPIN's first run did."""
    spin = runs["spin"][0]["parity"]
    for name, rs in runs.items():
        loss_gap = max(abs(spin["loss"] - r["parity"]["loss"]) for r in rs)
        logp_gap = max(
            abs(spin[k] - r["parity"][k]) for r in rs for k in ("logps_real", "logps_generated")
        )
        print(
            f"parity vs {name}: |loss diff| {loss_gap:.2e} (<= 1e-4: {loss_gap <= 1e-4}), "
            f"max |mean logp diff| {logp_gap:.2e}"
        )
        if loss_gap > 1e-4 or logp_gap > 1e-2:
            raise SystemExit(f"SPIN and {name} disagree on the parity batch: {spin} vs {rs}")


def parent(mode: str, repeats: int) -> None:
    settings = MODES[mode]
    common.model_dir()  # convert once, outside every contender's figures
    print(f"machine: {common.machine()}")
    print(
        f"mode: {mode} ({settings['pairs']} pairs, batch {settings['batch']}, "
        f"{repeats} repeats); load {common.load_average():.2f}"
    )
    runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    for repeat, contender in common.interleaved(CONTENDERS, repeats):
        r = measure(contender, settings)
        runs[contender].append(r)
        stages = {k: round(r[k], 1) for k in ("reference_s", "build_s", "train_s") if k in r}
        print(
            f"{contender:15s} run {repeat + 1} (load {r['load']:.2f}) "
            f"{r['pairs_per_s']:.4f} pairs/s  {r['seconds']:7.1f} s  "
            f"peak RSS {r['peak_rss_mb']:7.0f} MB  steps {r['steps']}  "
            f"first-step loss {r['first_step_loss']:.6f}  stages (s) {stages}",
            flush=True,
        )
    print(f"load after: {common.load_average():.2f}")
    check_parity(runs)
    speed = {name: common.summary([r["pairs_per_s"] for r in rs]) for name, rs in runs.items()}
    memory = {name: common.summary([r["peak_rss_mb"] for r in rs]) for name, rs in runs.items()}
    for name, rs in runs.items():
        loads = ", ".join(f"{r['load']:.2f}" for r in rs)
        print(
            f"{name:15s} median {speed[name]['median']:.4f} pairs/s "
            f"(range {speed[name]['min']:.4f}-{speed[name]['max']:.4f}, spread "
            f"{speed[name]['spread']:.0%}); peak RSS median {memory[name]['median']:.0f} MB; "
            f"loads {loads}"
        )
    peers = ("trl", "trl-precompute")
    ratio = {p: speed["spin"]["median"] / speed[p]["median"] for p in peers}
    mem = {p: memory["spin"]["median"] / memory[p]["median"] for p in peers}
    print(
        f"RATIO training pairs/s SPIN/TRL-default {ratio['trl']:.2f}x, "
        f"SPIN/TRL-precomputed {ratio['trl-precompute']:.2f}x (medians of {repeats}); "
        f"peak RSS SPIN/TRL-default {mem['trl']:.2f}, SPIN/TRL-precomputed "
        f"{mem['trl-precompute']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="minutes instead of ~25")
    parser.add_argument("--repeats", type=int, help="runs per contender (default 2)")
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats takes a whole number of at least 1, got {args.repeats}")
    if args.contender:
        child(args.contender, args.pairs, args.batch)
    else:
        parent(mode, args.repeats or MODES[mode]["repeats"])


if __name__ == "__main__":
    main()
