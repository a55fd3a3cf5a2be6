"""A synthetic language whose data distribution is known exactly (``data.source=world``).

SPIN's theory is about p_data, which no real data set reveals. Here it is a small
prompt-conditioned Markov chain over single-character symbols: a response is one to
``max_response_length`` symbols, then an end. Each symbol is one token of the project's
character tokenizer, and the end is its EOS token, so a model's summed token log-probability
of a response *is* its log-probability of the sequence, comparable with ``log p_data``.

How the prompt shapes the response: the next-symbol logits are a base table (indexed by the
previous symbol) plus, scaled by ``strength``, one random table per prompt position and
symbol, averaged over the prompt; ``temperature`` divides them all (small: peaked, large:
flat) and ``end_bias`` makes responses shorter or longer. ``seed`` fixes the tables, so the
same settings are the same language in every run.

Everything the study needs is computed exactly here: ``log p_data(y|x)``, the entropy of
``p_data(.|x)`` (by dynamic programming over the chain, for any size), the expected number of
response tokens, and the whole distribution over an enumerable response space.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import fields
from functools import cached_property
from typing import Any

import numpy as np

from spin.config import WorldConfig, enumerable_responses
from spin.errors import DataError


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def row_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of a probability table (0 log 0 = 0)."""
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=-1)


class World:
    """The process: prompts, exact probabilities and sampling.

    States are 0 (nothing emitted yet) and 1..V (the last symbol); outcomes are the V
    symbols and END (index V). The first step cannot end (responses are never empty) and
    the step after ``max_response_length`` symbols must.
    """

    def __init__(self, settings: Any) -> None:
        """``settings``: a :class:`~spin.config.WorldConfig`, or a config's ``data.world``
        (checked by spin/validation.py)."""
        if not isinstance(settings, WorldConfig):
            settings = WorldConfig(**{f.name: settings[f.name] for f in fields(WorldConfig)})
        self.settings = settings
        self.symbols = settings.symbols
        self.index = {c: i for i, c in enumerate(settings.symbols)}
        v, m = len(settings.symbols), settings.prompt_length
        rng = np.random.default_rng(settings.seed)
        self._base = rng.normal(size=(v + 1, v + 1))
        self._by_prompt = rng.normal(size=(m, v, v + 1, v + 1))

    @property
    def end(self) -> int:
        return len(self.symbols)

    def table(self, prompt: str) -> np.ndarray:
        """Next-outcome probabilities per state, shape (V+1 states, V+1 outcomes)."""
        s = self.settings
        codes = self.encode(prompt, "prompt", s.prompt_length)
        shaped = self._by_prompt[np.arange(s.prompt_length), codes].mean(axis=0)
        logits = (self._base + s.strength * shaped) / s.temperature
        logits[1:, self.end] += s.end_bias
        logits[0, self.end] = -np.inf
        return softmax_rows(logits)

    def encode(self, text: str, what: str, length: int | None = None) -> list[int]:
        """Symbol codes of ``text``; raises DataError on a character outside the language."""
        if length is not None and len(text) != length:
            raise DataError(f"{what} {text!r}: expected {length} symbols of {self.symbols!r}")
        try:
            return [self.index[c] for c in text]
        except KeyError as error:
            raise DataError(
                f"{what} {text!r}: {error.args[0]!r} is not a symbol of {self.symbols!r}"
            ) from None

    def in_language(self, response: str) -> bool:
        """Whether ``response`` has positive probability under p_data (for every prompt)."""
        return 1 <= len(response) <= self.settings.max_response_length and all(
            c in self.index for c in response
        )

    def log_prob(self, prompt: str, response: str) -> float:
        """Exact ``log p_data(response | prompt)``; minus infinity outside the language."""
        if not self.in_language(response):
            return -math.inf
        return self._log_prob(self.log_table(prompt), self.encode(response, "response"))

    def log_table(self, prompt: str) -> np.ndarray:
        """:meth:`table` in log space (minus infinity where an outcome is impossible)."""
        with np.errstate(divide="ignore"):
            return np.log(self.table(prompt))

    def _log_prob(self, log_table: np.ndarray, codes: list[int]) -> float:
        total, state = 0.0, 0
        for code in codes:
            total += log_table[state, code]
            state = code + 1
        if len(codes) < self.settings.max_response_length:
            total += log_table[state, self.end]
        return float(total)

    def _alive(self, table: np.ndarray) -> list[np.ndarray]:
        """Probability of each state after k symbols with no end yet, k = 0..max length-1."""
        alive = [np.eye(len(table))[0]]
        for _ in range(self.settings.max_response_length - 1):
            previous = alive[-1]
            step = np.zeros_like(previous)
            step[1:] = previous @ table[:, : self.end]
            alive.append(step)
        return alive

    def entropy(self, prompt: str) -> float:
        """Exact entropy of p_data(.|prompt) in nats, by dynamic programming (any size)."""
        table = self.table(prompt)
        per_state = row_entropy(table)
        return float(sum(a @ per_state for a in self._alive(table)))

    def expected_tokens(self, prompt: str) -> float:
        """Expected response length in tokens under p_data: symbols plus the end token."""
        table = self.table(prompt)
        symbols = sum(float(a @ table[:, : self.end].sum(axis=1)) for a in self._alive(table))
        return symbols + 1.0

    def sample(self, prompt: str, rng: np.random.Generator) -> str:
        """One response drawn from p_data(.|prompt)."""
        table = self.table(prompt)
        return self._sample(table, rng)

    def _sample(self, table: np.ndarray, rng: np.random.Generator) -> str:
        out, state = [], 0
        while len(out) < self.settings.max_response_length:
            code = int(rng.choice(len(table), p=table[state]))
            if code == self.end:
                break
            out.append(self.symbols[code])
            state = code + 1
        return "".join(out)

    def sample_many(self, prompt: str, n: int, rng: np.random.Generator) -> list[str]:
        table = self.table(prompt)
        return [self._sample(table, rng) for _ in range(n)]

    def all_prompts(self) -> list[str]:
        return [
            "".join(p) for p in itertools.product(self.symbols, repeat=self.settings.prompt_length)
        ]

    def random_prompts(self, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` prompts drawn uniformly (with replacement)."""
        codes = rng.integers(len(self.symbols), size=(n, self.settings.prompt_length))
        return ["".join(self.symbols[c] for c in row) for row in codes]

    @cached_property
    def responses(self) -> list[str]:
        """Every response of the language, shortest first, then in symbol order."""
        enumerable_responses(len(self.symbols), self.settings.max_response_length)
        return [
            "".join(chars)
            for k in range(1, self.settings.max_response_length + 1)
            for chars in itertools.product(self.symbols, repeat=k)
        ]

    def log_probs(self, prompt: str) -> np.ndarray:
        """``log p_data(y|prompt)`` for every ``y`` of :attr:`responses`, in that order."""
        log_table = self.log_table(prompt)
        return np.array(
            [self._log_prob(log_table, [self.index[c] for c in y]) for y in self.responses]
        )


def distinct_prompts(records: list[dict]) -> list[str]:
    """The prompts of ``records``, each once, in the order they first occur (a test split
    holds each test prompt with several sampled responses)."""
    return list(dict.fromkeys(r["prompt"] for r in records))


def generate_world(
    settings: Any, n_train: int, n_test: int, seed: int
) -> tuple[list[dict], list[dict]]:
    """The SFT set (``n_train`` pairs, prompts uniform) and the test set (``n_test`` distinct
    prompts, ``settings.test_samples`` responses each), drawn with ``seed``.

    The train stream is drawn pair by pair, so a smaller ``n_train`` is a prefix of a larger
    one: the SPIN prompts (``data.n_train``) are then SFT prompts (``sft.n_train``), as in the
    paper. The test prompts come from a stream of their own and do not move with ``n_train``.
    """
    world = World(settings)
    train_rng, test_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    train = []
    for _ in range(n_train):
        (prompt,) = world.random_prompts(1, train_rng)
        train.append({"prompt": prompt, "response": world.sample(prompt, train_rng)})
    every = world.all_prompts()
    if n_test > len(every):
        raise DataError(
            f"data.n_test={n_test}: the world has {len(every)} distinct prompts "
            f"({len(world.symbols)} symbols, prompt_length {world.settings.prompt_length})"
        )
    test_prompts = [every[i] for i in sorted(test_rng.choice(len(every), n_test, replace=False))]
    test = [
        {"prompt": p, "response": y}
        for p in test_prompts
        for y in world.sample_many(p, world.settings.test_samples, test_rng)
    ]
    return train, test
