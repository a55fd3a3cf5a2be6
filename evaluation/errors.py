"""Every error type of evaluation, at the bottom of its import graph.

evaluation is a library below the SPIN chain and imports nothing from ``spin``, so it has
its own errors; each names what a user can change (an ``eval`` key, a task file, a data
set), and entry points report them as they report spin's: a message and exit code 2.
"""

from __future__ import annotations


class EvalConfigError(ValueError):
    """An ``eval`` setting that cannot be scored as asked; the message names the key and what
    is allowed."""


class DatasetUnavailable(EvalConfigError):
    """A task's data set is neither local nor reachable; the message lists the ways out."""


class ResultsError(ValueError):
    """lm-eval's results lack what a plan asks for (a metric the task does not compute)."""


class LmEvalChanged(RuntimeError):
    """The installed lm-eval lacks a private name the project uses (see
    evaluation/lm_eval_adapter.py); the message names it and the tested releases."""
