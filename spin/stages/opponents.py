"""Whose play iteration t trains against (``opponent.name``): which pairs it trains on and
under which frozen model(s) their reference log-probabilities are taken. Each opponent is one
function of the iteration's :class:`Turn`; a new one is a function here and a name in
OPPONENTS (and in the config's allowed ``opponent.name`` values). Under a reference-free
loss (spin.losses.REFERENCE_FREE) an opponent only chooses the pairs: they are encoded and
no model scores them, so ``kl_mixture`` is ``previous``. Under an anchored loss
(spin.losses.ANCHORED) the pairs of iterations after 0 also carry iteration 0's generation
of each prompt (:attr:`Turn.anchor`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spin.artifacts import Artifact
from spin.config import IterationSettings
from spin.losses import is_anchored, is_reference_free
from spin.pairs import ReferenceMix
from spin.stages.context import Context
from spin.stages.loading import ModelRef
from spin.stages.reference import reference


@dataclass(frozen=True)
class Turn:
    """Where the chain stands at iteration ``t``."""

    t: int
    start: ModelRef  # M_0
    model: ModelRef  # M_t
    gens: list[Artifact]  # the pair sets of iterations 0..t
    settings: IterationSettings
    scored: bool = True  # whether the pairs get reference log-probabilities (the loss reads them)
    anchored: bool = False  # whether they carry iteration 0's generations (the loss reads them)

    @property
    def anchor(self) -> Artifact | None:
        """Iteration 0's generations, for an anchored loss after iteration 0."""
        return self.gens[0] if self.anchored and self.t > 0 else None

    @property
    def stage(self) -> str:
        """The iteration's name in progress bars and logs."""
        return f"iter {self.t}"

    def pair_sets(self) -> list[Artifact]:
        """Iteration t's pairs, then those of t-1 when ``mix_previous`` is on."""
        mix = self.settings.mix_previous and self.t > 0
        return [self.gens[-1], self.gens[-2]] if mix else [self.gens[-1]]


def previous(ctx: Context, turn: Turn) -> ReferenceMix:
    """The paper's opponent: M_t's own pairs of iteration t, plus those of t-1 when mixing
    is on, all referenced under M_t."""
    ref = reference(
        ctx, turn.model, turn.pair_sets(), turn.stage, score=turn.scored, anchor=turn.anchor
    )
    return [(ref, 1.0)]


def fictitious(ctx: Context, turn: Turn) -> ReferenceMix:
    """Fictitious play: per prompt one pair drawn from every iteration's so far."""
    seed = ctx.seeded(ctx.cfg.opponent.seed) + turn.t
    sets, stage = turn.gens, turn.stage
    ref = reference(ctx, turn.model, sets, stage, seed, score=turn.scored, anchor=turn.anchor)
    return [(ref, 1.0)]


def kl_mixture(ctx: Context, turn: Turn) -> ReferenceMix:
    """The paper's pairs under a mixture of references: M_t with ``opponent.mixture_weight``,
    the start model with the rest (M_t alone while M_t is the start model)."""
    sets = turn.pair_sets()
    ref = reference(ctx, turn.model, sets, turn.stage, score=turn.scored, anchor=turn.anchor)
    if turn.model.key == turn.start.key or not turn.scored:
        return [(ref, 1.0)]
    start_ref = reference(ctx, turn.start, sets, f"{turn.stage}: start model")
    weight = ctx.cfg.opponent.mixture_weight
    return [(ref, weight), (start_ref, 1.0 - weight)]


OPPONENTS: dict[str, Callable[[Context, Turn], ReferenceMix]] = {
    "previous": previous,
    "fictitious": fictitious,
    "kl_mixture": kl_mixture,
}


def opponent_references(
    ctx: Context,
    start: ModelRef,
    model: ModelRef,
    gens: list[Artifact],
    settings: IterationSettings,
    t: int,
) -> ReferenceMix:
    """The pairs iteration ``t`` trains on and their reference, by ``opponent.name``: from
    ``gens``, the pair sets of iterations 0..t, for M_t (``model``) chained from ``start``."""
    name = ctx.cfg.loss.name
    turn = Turn(t, start, model, gens, settings, not is_reference_free(name), is_anchored(name))
    return OPPONENTS[ctx.cfg.opponent.name](ctx, turn)
