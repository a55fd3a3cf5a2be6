"""The SPIN chain (DESIGN.md, "Pipeline semantics"), as the paper's Algorithm 1.

Iteration t: the model M_t answers every training prompt (generate); the pairs of t, plus
those of t-1 when mixing is on, get their reference log-probabilities under the frozen M_t
(the opponent's references); M_{t+1} is trained from M_t with the loss (train); M_{t+1} is
scored on the held-out split (evaluate). Each stage (spin/stages/) is an artifact keyed by
exactly what determines it, so jobs of a sweep share stages and a finished command re-runs
for free; the logbook (spin/logbook.py) keeps the report's rows and the logged metrics.

A job builds the chain or one of the paper's comparisons (``baseline``, spin/baselines.py)
from the start model, optionally made by an SFT stage (``sft.enabled``). Launched on several
processes (``trainer.distributed``), every process runs the job: generation and the
reference pass split their work across them, training is the Trainer's DDP, FSDP or ZeRO-3,
and the main process alone writes artifacts (spin/distributed.py).
"""

from __future__ import annotations

import logging
from typing import Any

from spin.artifacts import Artifact
from spin.baselines import dpo, sft_more, spin_dpo
from spin.config import IterationSettings, iteration_settings
from spin.logbook import Logbook
from spin.losses import variant_settings
from spin.stages.context import Context
from spin.stages.generation import generate
from spin.stages.loading import ModelRef
from spin.stages.opponents import opponent_references
from spin.stages.scoring import evaluate
from spin.stages.start import start_model
from spin.stages.training import Objective, train

log = logging.getLogger(__name__)


def spin(ctx: Context, book: Logbook, start: ModelRef) -> ModelRef:
    """SPIN iterations 0..iter from ``start`` (M_0), the paper's Algorithm 1; returns the
    last model trained, M_{iter+1}."""
    model = start  # M_t
    pairs: list[Artifact] = []  # the pair sets of iterations 0..t
    for t in range(ctx.cfg.iter + 1):
        settings = iteration_settings(ctx.cfg, t)
        # Generate with M_t: y' ~ p_{theta_t}(. | x) per train prompt x (or take given pairs).
        pairs.append(generate(ctx, model, t))
        # Pair with t-1 (when mixing) and take their reference log-probabilities under M_t.
        refs = opponent_references(ctx, start, model, pairs, settings, t)
        # Train M_{t+1} from M_t: real responses up, generated ones down.
        trained, artifact = train(ctx, model, refs, objective(ctx, settings), f"iter {t}")
        # Score M_{t+1} on the held-out split.
        results = evaluate(ctx, trained)
        book.record_iteration(t, settings, trained, results, pairs[-1], refs, artifact)
        model = trained
    return model


def objective(ctx: Context, settings: IterationSettings) -> Objective:
    """What iteration training optimises: the configured loss, with the iteration's beta,
    learning rate and epochs, and the settings of its own the loss declares (IRIS's alpha:
    the iteration's, from ``schedule``)."""
    loss = ctx.cfg.loss
    return Objective(
        loss=loss.name,
        beta=settings.beta,
        nll_weight=loss.nll_weight,
        label_smoothing=loss.label_smoothing,
        lr=settings.lr,
        epochs=settings.epochs,
        settings=variant_settings(loss.name, {**loss, "alpha": settings.alpha}),
    )


def run(ctx: Context) -> dict[str, Any]:
    """Build what the job's ``baseline`` asks for from the start model, record each model
    scored, and return the report."""
    cfg = ctx.cfg
    book = Logbook(ctx.tracker, cfg.eval.n_samples)
    name = cfg.baseline.name
    if name in ("none", "spin_dpo") and ctx.given:
        # Read first: a malformed row stops the job before any model work.
        log.info("Iterations %s train on given pairs (spin.given_pairs)", sorted(ctx.given))
    start, sft_stage = start_model(ctx)
    book.record_start(start, evaluate(ctx, start), sft_stage)
    if name == "sft_more":
        sft_more(ctx, book, start)
    elif name == "dpo":
        dpo(ctx, book, start, "DPO", "dpo", None)
    elif name in ("none", "spin_dpo"):
        final = spin(ctx, book, start)
        if name == "spin_dpo":
            spin_dpo(ctx, book, final)
    return book.report()
