"""Plausible mistakes in worked arithmetic solutions: one step's result off by a little.

A wrong solution that is obviously garbage teaches (or tests) nothing; one that makes a
single slip and then carries it correctly through the later steps to a wrong final answer
differs from the true solution only from the slip on. The embedded mc2 task scores whether a
model prefers the true one, and the arith DPO baseline trains on the same kind of pair.

Solutions are the synthetic data's format: one ``x op y = r`` line per step, then
``#### <answer>``.
"""

from __future__ import annotations

import random
import re

# "x op y = r" in one solution line; the result is where an arithmetic slip goes.
EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if a % b == 0 else None,
}
SLIPS = (-10, -2, -1, 1, 2, 10)
EXPECTED_SOLUTION = "expected step lines with one 'x op y = r' each, then a '#### n' line"


def _redo_line(line: str, old: int, new: int) -> tuple[str, int, int] | None:
    """Carry a changed value into the next step: the line with ``old`` read as ``new``,
    its old result and its new one; None when the step no longer divides evenly, or when its
    operand equals ``old`` too (the text cannot tell which mention of the number to change)."""
    a, op, b, r = EQUATION.search(line).groups()
    if int(a) != old:
        return line, int(r), int(r)
    if int(b) == old:
        return None
    result = OPS[op](new, int(b))
    if result is None or result < 0:
        return None
    changed = re.sub(rf"\b{old}\b", str(new), line[: line.rindex("=")])
    tail = line[line.rindex("=") :]
    return changed + re.sub(rf"\b{r}\b", str(result), tail, count=1), int(r), result


def slip(solution: str, step: int, delta: int) -> str | None:
    """The solution with the result of ``step`` off by ``delta``, carried consistently through
    the later steps and the final answer: a plausible mistake. None when it cannot be carried."""
    lines = solution.splitlines()
    body, final = lines[:-1], lines[-1]
    match = EQUATION.search(body[step])
    old = int(match.group(4))
    new = old + delta
    if new < 0:
        return None
    start, end = match.span(4)
    out = [*body[:step], body[step][:start] + str(new) + body[step][end:]]
    for line in body[step + 1 :]:
        redone = _redo_line(line, old, new)
        if redone is None:
            return None
        line, old, new = redone
        out.append(line)
    return "\n".join([*out, final.replace(str(old), str(new))])


def plausible_mistake(solution: str, rng: random.Random) -> str:
    """A wrong version of ``solution`` with a different final answer, drawn by ``rng``: the
    (step, slip) candidates are shuffled and the first one that carries through is taken.

    Raises ValueError when the solution is not in the step-lines format or no slip carries
    through to a different final answer.
    """
    lines = solution.splitlines()
    if (
        len(lines) < 2
        or not lines[-1].startswith("####")
        or not all(EQUATION.search(line) for line in lines[:-1])
    ):
        raise ValueError(f"cannot make a slip in {solution!r}: {EXPECTED_SOLUTION}")
    candidates = [(step, delta) for step in range(len(lines) - 1) for delta in SLIPS]
    rng.shuffle(candidates)
    for step, delta in candidates:
        wrong = slip(solution, step, delta)
        if wrong is not None and wrong.splitlines()[-1] != lines[-1]:
            return wrong
    raise ValueError(f"no slip in {solution!r} carries through to a different final answer")
