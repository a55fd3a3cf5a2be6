"""The paper's comparisons, built from the chain's own stages so their costs and scores are
measured the same way: further SFT on the real responses (``sft_more``), and DPO on
preference pairs (chosen in place of real, rejected of generated) from the start model
(``dpo``) or from the chain's last model (``spin_dpo``). The start model as is (``sft``) needs
no stage of its own."""

from __future__ import annotations

from pathlib import Path

from spin.artifacts import Artifact
from spin.data import fingerprint, load_preferences
from spin.logbook import Logbook, Scored
from spin.losses import is_reference_free, variant_settings
from spin.pairs import read_pairs, write_pairs
from spin.stages.context import Context
from spin.stages.loading import ModelRef
from spin.stages.prompts import check_prompts
from spin.stages.reference import reference
from spin.stages.scoring import evaluate
from spin.stages.start import sft
from spin.stages.training import Objective, train


def sft_more(ctx: Context, book: Logbook, start: ModelRef) -> None:
    """The paper's "SFT one more epoch": plain SFT on the same real responses."""
    base = ctx.cfg.baseline
    lr = base.lr if base.lr is not None else ctx.cfg.sft.lr
    seed = ctx.seeded(ctx.cfg.trainer.seed)
    trained, artifact = sft(ctx, start, ctx.splits.train, base.epochs, lr, "sft_more", seed)
    evaluation = evaluate(ctx, trained)
    book.record_baseline(
        Scored("SFT + more epochs", "sft_more", None, trained, evaluation, artifact),
        ctx.cfg.iter,
    )


def dpo(ctx: Context, book: Logbook, model: ModelRef, label: str, kind: str, t: int | None) -> None:
    """DPO from ``model``: the SPIN loss and trainer on preference pairs."""
    base = ctx.cfg.baseline
    pairs = preferences(ctx)
    check_prompts(ctx.cfg, model, [p["prompt"] for p in read_pairs(pairs)], "preference")
    scored = not is_reference_free(base.loss)
    refs = [(reference(ctx, model, [pairs], kind, score=scored), 1.0)]
    objective = Objective(
        loss=base.loss,
        beta=base.beta,
        nll_weight=0.0,
        label_smoothing=0.0,
        lr=base.lr if base.lr is not None else ctx.cfg.trainer.lr,
        epochs=base.epochs,
        settings=variant_settings(base.loss, ctx.cfg.loss),
    )
    trained, artifact = train(ctx, model, refs, objective, kind)
    evaluation = evaluate(ctx, trained)
    scored = Scored(label, kind, t, trained, evaluation, artifact, refs=refs)
    book.record_baseline(scored, ctx.cfg.iter)


def spin_dpo(ctx: Context, book: Logbook, final: ModelRef) -> None:
    """The paper's best row: DPO from the last SPIN iteration's model."""
    t = ctx.cfg.iter
    dpo(ctx, book, final, f"SPIN iteration {t} + DPO", "spin_dpo", t)


def preferences(ctx: Context) -> Artifact:
    """The DPO baselines' pairs in the generations' layout: chosen as real, rejected as
    generated. Keyed by their content, so an edited preference file is picked up."""
    pairs = load_preferences(ctx.cfg.baseline.preferences, ctx.splits.train)
    spec = {"preferences": fingerprint(pairs)}

    def build(work: Path) -> None:
        rows = [
            {"prompt": p["prompt"], "real": p["chosen"], "generated": p["rejected"]} for p in pairs
        ]
        write_pairs(work, rows, {"generated_tokens": None, "seconds": None})

    return ctx.artifact("preferences", spec, build)
