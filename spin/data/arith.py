"""Seeded synthetic arithmetic word problems with GSM8K-style worked solutions.

The embedded data set has to work offline, be cheap to grow, and be hard enough for a small
model that SPIN's generated answers often differ from the real ones. Each problem is a short
story whose quantity changes by one arithmetic operation per sentence; its solution has one
line per operation and ends with ``#### <answer>``, the format exact-match scoring reads.

Train and test are disjoint by construction: a problem's split is decided by a hash of its
canonical form (template and numbers, not the names or items that only dress it up), so a
test problem can never be drawn into train, whatever the seed or the sizes. Because every
candidate consumes the random stream the same way whether it is kept or not, growing
``n_train`` keeps the earlier problems and only appends new ones (nested data-size ablations).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from spin.errors import ConfigError, DataError
from spin.names import ARITH_STEPS

MAX_STEPS = ARITH_STEPS[-1]
# One canonical problem in TEST_EVERY goes to the test split.
TEST_EVERY = 5
SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
PARTS = {
    2: "half",
    3: "one third",
    4: "one quarter",
    5: "one fifth",
    6: "one sixth",
    7: "one seventh",
    8: "one eighth",
    9: "one ninth",
}
NAMES = (
    ("Tom", "he"),
    ("Mia", "she"),
    ("Liam", "he"),
    ("Ava", "she"),
    ("Noah", "he"),
    ("Zoe", "she"),
    ("Omar", "he"),
    ("Lena", "she"),
    ("Ravi", "he"),
    ("Sara", "she"),
    ("Ben", "he"),
    ("Nina", "she"),
    ("Jack", "he"),
    ("Emma", "she"),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PRONOUNS = {
    "he": {"pron": "he", "Pron": "He", "pos": "his", "obj": "him"},
    "she": {"pron": "she", "Pron": "She", "pos": "her", "obj": "her"},
}


@dataclass(frozen=True)
class Step:
    """One operation: the sentence it adds to the problem and the line it adds to the solution."""

    question: str
    solution: str


@dataclass(frozen=True)
class Template:
    """A story type. Placeholders: {name} {pron} {Pron} {pos} {obj} {item} {prev} {next}
    {last} {a} (value before the step) {b} (operand) {r} (result) {x} {y} {part}."""

    key: str
    items: tuple[str, ...]
    start: str
    ops: dict[str, Step]
    question: str
    # Optional opening "x groups of y" sentence, itself one multiplication step.
    product: Step | None = None
    # A division every problem of this story ends with (sharing out, packing into boxes).
    final_div: Step | None = None
    # "one": the same subject throughout; "people": each step introduces a new person;
    # "days": each step is the next day of the week.
    chain: str = "one"
    lo: int = 0
    hi: int = 500


TEMPLATES: tuple[Template, ...] = (
    Template(
        key="fruit",
        items=("apples", "oranges", "pears", "peaches", "plums", "lemons"),
        start="{name} has {a} {item}.",
        product=Step(
            "{name} picks {x} baskets with {y} {item} in each.",
            "{name} picks {x} baskets of {y} {item}, so {pron} has {x} * {y} = {a} {item}.",
        ),
        ops={
            "add": Step(
                "Then {pron} buys {b} more {item} at the market.",
                "{name} had {a} {item} and buys {b} more, so {pron} has {a} + {b} = {r} {item}.",
            ),
            "sub": Step(
                "{Pron} uses {b} {item} to bake pies.",
                "{name} uses {b} of {pos} {a} {item}, so {pron} has {a} - {b} = {r} {item} left.",
            ),
            "mul": Step(
                "{Pron} trades them at a farm and comes back with {b} times as many {item}.",
                "{name} comes back with {b} times {a} {item}, "
                "so {pron} has {a} * {b} = {r} {item}.",
            ),
            "div": Step(
                "{Pron} packs them equally into {b} boxes and keeps only one box.",
                "{name} packs {a} {item} equally into {b} boxes and keeps one, "
                "so {pron} has {a} / {b} = {r} {item}.",
            ),
        },
        question="How many {item} does {name} have now?",
    ),
    Template(
        key="savings",
        items=("dollars",),
        start="{name} has {a} dollars in a piggy bank.",
        product=Step(
            "{name} saves {y} dollars a week for {x} weeks.",
            "{name} saves {y} dollars a week for {x} weeks, so {pron} has {x} * {y} = {a} dollars.",
        ),
        ops={
            "add": Step(
                "{Pron} earns {b} dollars washing cars.",
                "{name} had {a} dollars and earns {b} more, so {pron} has {a} + {b} = {r} dollars.",
            ),
            "sub": Step(
                "{Pron} spends {b} dollars on a book.",
                "{name} spends {b} of {pos} {a} dollars, so {pron} has {a} - {b} = {r} dollars.",
            ),
            "mul": Step(
                "{Pron} sells lemonade with it and ends up with {b} times as much money.",
                "{name} ends up with {b} times {a} dollars, so {pron} has {a} * {b} = {r} dollars.",
            ),
            "div": Step(
                "{Pron} splits the money equally into {b} jars and gives away all but one jar.",
                "{name} splits {a} dollars into {b} equal jars and keeps one, "
                "so {pron} has {a} / {b} = {r} dollars.",
            ),
        },
        question="How many dollars does {name} have in the end?",
    ),
    Template(
        key="ages",
        items=("years",),
        start="{name} is {a} years old.",
        ops={
            "add": Step(
                "{next} is {b} years older than {prev}.",
                "{next} is {b} years older than {prev}, so {next} is {a} + {b} = {r} years old.",
            ),
            "sub": Step(
                "{next} is {b} years younger than {prev}.",
                "{next} is {b} years younger than {prev}, so {next} is {a} - {b} = {r} years old.",
            ),
            "mul": Step(
                "{next} is {b} times as old as {prev}.",
                "{next} is {b} times as old as {prev}, so {next} is {a} * {b} = {r} years old.",
            ),
            "div": Step(
                "{prev} is {b} times as old as {next}.",
                "{prev} is {b} times as old as {next}, so {next} is {a} / {b} = {r} years old.",
            ),
        },
        question="How old is {last}?",
        chain="people",
        lo=1,
        hi=99,
    ),
    Template(
        key="distance",
        items=("kilometres",),
        start="On Monday, {name} cycles {a} kilometres.",
        product=Step(
            "On Monday, {name} cycles for {x} hours at {y} kilometres per hour.",
            "On Monday, {name} cycles {x} hours at {y} kilometres per hour, "
            "so {pron} cycles {x} * {y} = {a} kilometres.",
        ),
        ops={
            "add": Step(
                "On {next}, {pron} cycles {b} kilometres more than on {prev}.",
                "On {next}, {pron} cycles {b} more than {a} kilometres, "
                "so {pron} cycles {a} + {b} = {r} kilometres.",
            ),
            "sub": Step(
                "On {next}, {pron} cycles {b} kilometres less than on {prev}.",
                "On {next}, {pron} cycles {b} less than {a} kilometres, "
                "so {pron} cycles {a} - {b} = {r} kilometres.",
            ),
            "mul": Step(
                "On {next}, {pron} cycles {b} times as far as on {prev}.",
                "On {next}, {pron} cycles {b} times {a} kilometres, "
                "so {pron} cycles {a} * {b} = {r} kilometres.",
            ),
            "div": Step(
                "On {next}, {pron} cycles {part} of the distance of {prev}.",
                "On {next}, {pron} cycles {part} of {a} kilometres, "
                "so {pron} cycles {a} / {b} = {r} kilometres.",
            ),
        },
        question="How many kilometres does {name} cycle on {last}?",
        chain="days",
        lo=1,
        hi=300,
    ),
    Template(
        key="sharing",
        items=("candies", "stickers", "marbles", "cookies", "cards"),
        start="{name} has {a} {item}.",
        product=Step(
            "{name} buys {x} bags with {y} {item} in each.",
            "{name} buys {x} bags of {y} {item}, so {pron} has {x} * {y} = {a} {item}.",
        ),
        ops={
            "add": Step(
                "{Pron} wins {b} more {item} in a game.",
                "{name} had {a} {item} and wins {b} more, so {pron} has {a} + {b} = {r} {item}.",
            ),
            "sub": Step(
                "{Pron} loses {b} {item} on the way home.",
                "{name} loses {b} of {pos} {a} {item}, so {pron} has {a} - {b} = {r} {item}.",
            ),
        },
        final_div=Step(
            "Then {pron} shares all of them equally among {b} friends.",
            "{name} shares {a} {item} equally among {b} friends, "
            "so each friend gets {a} / {b} = {r} {item}.",
        ),
        question="How many {item} does each friend get?",
        lo=1,
    ),
    Template(
        key="bakery",
        items=("muffins", "cupcakes", "rolls", "cookies"),
        start="A bakery bakes {a} {item} in the morning.",
        product=Step(
            "A bakery bakes {x} trays of {y} {item} in the morning.",
            "The bakery bakes {x} trays of {y} {item}, so it has {x} * {y} = {a} {item}.",
        ),
        ops={
            "add": Step(
                "In the afternoon it bakes {b} more {item}.",
                "The bakery had {a} {item} and bakes {b} more, so it has {a} + {b} = {r} {item}.",
            ),
            "sub": Step(
                "It sells {b} {item} to early customers.",
                "The bakery sells {b} of its {a} {item}, so it has {a} - {b} = {r} {item} left.",
            ),
            "mul": Step(
                "A large order comes in, and it bakes until it has {b} times as many {item}.",
                "The bakery ends up with {b} times {a} {item}, so it has {a} * {b} = {r} {item}.",
            ),
        },
        final_div=Step(
            "It packs all the {item} into boxes of {b}.",
            "The bakery packs {a} {item} into boxes of {b}, so it fills {a} / {b} = {r} boxes.",
        ),
        question="How many boxes does the bakery fill?",
        lo=1,
    ),
)


@dataclass(frozen=True)
class Problem:
    """A generated problem; ``key`` is its canonical form, the only thing the split depends on."""

    key: tuple
    prompt: str
    response: str


def _apply(op: str, a: int, b: int) -> int:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    return a // b


def _operands(op: str, a: int, template: Template) -> list[int]:
    """Operands keeping the result a whole number in [lo, hi], small as in GSM8K."""
    lo, hi = template.lo, template.hi
    if op == "add":
        return list(range(2, min(60, hi - a) + 1))
    if op == "sub":
        return list(range(2, min(60, a - lo) + 1))
    if op == "mul":
        return [b for b in range(2, 6) if a * b <= hi]
    return [b for b in range(2, 10) if a % b == 0 and a // b >= max(lo, 2)]


def _pick_op(template: Template, a: int, previous: str | None, rng: random.Random) -> str | None:
    """A feasible operation, different from the previous one when possible (mixed operations)."""
    feasible = [op for op in template.ops if _operands(op, a, template)]
    varied = [op for op in feasible if op != previous]
    choices = varied or feasible
    return rng.choice(choices) if choices else None


def _subjects(template: Template, steps: int, rng: random.Random) -> tuple[dict, list[str]]:
    """The story's wording: the main character and the chain of people or days it walks."""
    people = rng.sample(NAMES, k=min(len(NAMES), steps + 1))
    name, pronoun = people[0]
    words = {"name": name, "item": rng.choice(template.items), **PRONOUNS[pronoun]}
    if template.chain == "people":
        chain = [person for person, _ in people]
    elif template.chain == "days":
        chain = list(DAYS)
    else:
        chain = [name] * (steps + 1)
    return words, chain


@dataclass
class _Draft:
    """A problem being written: its canonical key, current value, sentences and solution."""

    key: list
    value: int
    sentences: list[str]
    lines: list[str]

    def apply(self, step: Step, op: str, b: int, fields: dict) -> None:
        result = _apply(op, self.value, b)
        self.sentences.append(step.question.format(**fields, b=b))
        self.lines.append(step.solution.format(**fields, a=self.value, b=b, r=result))
        self.key += [op, b]
        self.value = result


def _open(template: Template, words: dict, use_product: bool, rng: random.Random) -> _Draft:
    """The opening sentence: a plain starting amount, or "x groups of y" as a first step."""
    if not use_product:
        value = rng.randint(max(template.lo, 5), min(template.hi, 99))
        return _Draft(
            [template.key, "start", value], value, [template.start.format(**words, a=value)], []
        )
    x, y = rng.randint(2, 9), rng.randint(3, 15)
    return _Draft(
        [template.key, "product", x, y],
        x * y,
        [template.product.question.format(**words, x=x, y=y)],
        [template.product.solution.format(**words, x=x, y=y, a=x * y)],
    )


def _build(template: Template, steps: int, rng: random.Random) -> Problem | None:
    """Draw one problem with exactly ``steps`` operations, or None when the draw dead-ends."""
    words, chain = _subjects(template, steps, rng)
    middle = steps - (template.final_div is not None)
    use_product = template.product is not None and middle >= 1 and rng.random() < 0.5
    middle -= use_product
    draft = _open(template, words, use_product, rng)
    previous = None
    for index in range(middle):
        op = _pick_op(template, draft.value, previous, rng)
        if op is None:
            return None
        b = rng.choice(_operands(op, draft.value, template))
        fields = {**words, "prev": chain[index], "next": chain[index + 1], "part": PARTS.get(b)}
        draft.apply(template.ops[op], op, b, fields)
        previous = op
    if template.final_div is not None:
        divisors = _operands("div", draft.value, template)
        if not divisors:
            return None
        draft.apply(template.final_div, "div", rng.choice(divisors), words)
    question = template.question.format(**words, last=chain[middle])
    lines = [*draft.lines, f"#### {draft.value}"]
    return Problem(tuple(draft.key), " ".join([*draft.sentences, question]), "\n".join(lines))


def split_of(key: tuple) -> str:
    """The split a canonical problem belongs to, fixed forever by its hash."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_EVERY == 0 else "train"


def _check_args(n_train: int, n_test: int, difficulty: list[int]) -> None:
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"data.n_train={n_train} and data.n_test={n_test} must be >= 0")
    if not difficulty or any(not 1 <= int(d) <= MAX_STEPS for d in difficulty):
        raise ConfigError(
            f"data.difficulty={list(difficulty)!r}: expected a non-empty list of step counts "
            f"between 1 and {MAX_STEPS}"
        )


def generate_arith(
    n_train: int, n_test: int, seed: int, difficulty: list[int]
) -> tuple[list[dict], list[dict]]:
    """``n_train`` and ``n_test`` problems with step counts drawn from ``difficulty``.

    Problems are drawn from one seeded stream and each goes to the split its hash names, until
    both splits are full; duplicates of an already kept problem are skipped.
    """
    _check_args(n_train, n_test, difficulty)
    rng = random.Random(seed)
    wanted = {"train": n_train, "test": n_test}
    kept: dict[str, list[dict]] = {"train": [], "test": []}
    seen: set[tuple] = set()
    attempts = 0
    budget = 1000 + 200 * (n_train + n_test)
    while any(len(kept[s]) < wanted[s] for s in kept):
        attempts += 1
        if attempts > budget:
            raise DataError(
                f"could only generate {len(kept['train'])} train and {len(kept['test'])} test "
                f"distinct problems for data.difficulty={list(difficulty)}; add larger step "
                "counts or ask for fewer problems"
            )
        template = rng.choice(TEMPLATES)
        problem = _build(template, int(rng.choice(difficulty)), rng)
        if problem is None or problem.key in seen:
            continue
        split = split_of(problem.key)
        if len(kept[split]) < wanted[split]:
            seen.add(problem.key)
            kept[split].append({"prompt": problem.prompt, "response": problem.response})
    return kept["train"], kept["test"]


_FINAL = re.compile(r"^\s*\$?\s*(-?[\d,]*\.?\d+)")


def extract_answer(text: str) -> str | None:
    """The normalised number after the last ``####``, so "1,200." and "1200.0" both read 1200."""
    _, marker, tail = text.rpartition("####")
    if not marker:
        return None
    match = _FINAL.match(tail)
    if match is None:
        return None
    number = match.group(1).replace(",", "")
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")
