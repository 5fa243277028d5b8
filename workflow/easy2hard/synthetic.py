"""A levelled arithmetic dataset the project generates itself (the offline default).

Level L asks for the result of L operations on one-digit numbers (factors after a x are 2-5),
so harder levels need longer chains of the same skills -- the easy-to-hard structure of MATH in
miniature. Three styles:

- ``chain`` (the default): "Start with 3, then apply + 4, × 2, - 1 in this order. What is the
  result?", one short step per operation ("3 + 4 = 7.") applied left to right. A step is
  checked from the previous step and the question alone, and a level-5 solution is ~45 tokens.
- ``plus_minus``: the chain format, but every level has chains of 3-5 operations and the level is
  the number of + and - steps (the others are x): a hard problem is no longer than an easy one,
  it has more of the error-prone steps (docs/miniature.md: a probe of the evaluator without the
  length problem).
- ``expression``: "Compute $3 + 4 \\times 2 - 1$." with precedence, one sentence per operation
  that restates the remaining expression ("We compute ..., so the expression becomes ..."),
  ~2.5x the tokens; the project's first miniature (docs/miniature.md has what it measured).

With `max_value`, every number a solution writes stays in [0, max_value], so hard problems need
no arithmetic fact that easy ones never show: only the chain is longer. In the chain and
expression styles, two subjects give the validation split a subject x level stratification to match: "Addition and
Subtraction" (+, -) and "Mixed Operations" (+, -, x; with precedence in the expression style); plus_minus rows are all
"Mixed Operations".

Rows use the MATH schema (problem, solution, answer, subject, level, unique_id); the solution is
MATH-style text with one step per operation and a final ``\\boxed{}``. Chain rows also carry their
``steps`` (shorter than the MATH step heuristic's merge threshold); expression rows go through the
same step heuristic as the real MATH files.
"""

from __future__ import annotations

import random
import re

from .formats import STEP_SEPARATOR
from .metrics import LEVELS

SUBJECT_OPERATORS = {
    "Addition and Subtraction": ["+", "-"],
    "Mixed Operations": ["+", "-", "*"],
}
STYLES = ("chain", "plus_minus", "expression")
# plus_minus: every problem is a chain of 3-5 operations; the level counts its + and - steps
PLUS_MINUS_SUBJECT = "Mixed Operations"
PLUS_MINUS_LENGTH = (3, 5)
_LATEX = {"+": "+", "-": "-", "*": "\\times"}
_CHAIN_SYMBOL = {"+": "+", "-": "-", "*": "×"}


def _render(tokens: list) -> str:
    return " ".join(_LATEX.get(token, token) if isinstance(token, str) else str(token) for token in tokens)


def _apply(left: int, operator: str, right: int) -> int:
    return {"+": left + right, "-": left - right, "*": left * right}[operator]


def next_operation(tokens: list) -> tuple[int, str, int, int, list]:
    """The operation a solution computes next (the first x, else the leftmost + or -):
    (left, operator, right, value, the expression after it)."""
    operators = tokens[1::2]
    position = 2 * operators.index("*") + 1 if "*" in operators else 1
    left, operator, right = tokens[position - 1], tokens[position], tokens[position + 1]
    value = _apply(left, operator, right)
    return left, operator, right, value, tokens[: position - 1] + [value] + tokens[position + 2 :]


def solve_steps(tokens: list) -> tuple[list[str], int]:
    """Evaluate ``[n, op, n, op, ...]`` one operation at a time (x first, then left to right).

    Returns one sentence per operation and the value.
    """
    tokens = list(tokens)
    sentences = []
    while len(tokens) > 1:
        left, operator, right, value, tokens = next_operation(tokens)
        computed = f"${_render([left, operator, right])} = {value}$"
        if len(tokens) > 1:
            sentences.append(f"We compute {computed}, so the expression becomes ${_render(tokens)}$.")
        else:
            sentences.append(f"Finally, we compute {computed}, so the answer is $\\boxed{{{value}}}$.")
    return sentences, tokens[0]


def within(tokens: list, max_value: int | None) -> bool:
    """Whether every number the reference solution writes (operands, intermediate values, the
    answer) lies in [0, max_value]; None: no bound."""
    if max_value is None:
        return True
    tokens = list(tokens)
    values = tokens[::2]
    while len(tokens) > 1:
        *_, value, tokens = next_operation(tokens)
        values.append(value)
    return all(0 <= value <= max_value for value in values)


def _operands(operator: str) -> range:
    return range(2, 6) if operator == "*" else range(1, 10)


def _bounded_operations(value: int, operators: list[str], max_value: int | None) -> list[tuple[str, int]]:
    """Every (operator, operand) that keeps `value` within [0, max_value] (None: no bound)."""
    return [
        (operator, operand)
        for operator in operators
        for operand in _operands(operator)
        if max_value is None or 0 <= _apply(value, operator, operand) <= max_value
    ]


def chain_steps(start: int, operations: list[tuple[str, int]]) -> tuple[list[str], int]:
    """One step per operation, left to right ("3 + 4 = 7."), and the result."""
    steps, value = [], start
    for operator, operand in operations:
        result = _apply(value, operator, operand)
        steps.append(f"{value} {_CHAIN_SYMBOL[operator]} {operand} = {result}.")
        value = result
    return steps, value


def chain_problem_text(start: int, operations: list[tuple[str, int]]) -> str:
    applied = ", ".join(f"{_CHAIN_SYMBOL[operator]} {operand}" for operator, operand in operations)
    return f"Start with {start}, then apply {applied} in this order. What is the result?"


def make_chain_problem(
    level: int, subject: str, rng: random.Random, max_value: int | None = None
) -> tuple[str, list[str], str]:
    """(problem, steps, answer) for `level` operations applied left to right; with `max_value`,
    each operation is drawn among those that keep the running value in [0, max_value]."""
    operators = SUBJECT_OPERATORS[subject]
    start = value = rng.randint(1, 9)
    operations = []
    for _ in range(level):
        candidates = _bounded_operations(value, operators, max_value)
        if not candidates:
            raise ValueError(f"no {subject} operation keeps {value} within [0, {max_value}]")
        operator, operand = rng.choice(candidates)
        operations.append((operator, operand))
        value = _apply(value, operator, operand)
    steps, value = chain_steps(start, operations)
    return chain_problem_text(start, operations), steps, str(value)


def make_plus_minus_problem(level: int, rng: random.Random, max_value: int | None = None) -> tuple[str, list[str], str]:
    """(problem, steps, answer) for a chain of max(3, level) to 5 operations (chain style) of which
    `level` are + or - and the others x, in a random order, redrawn until every value stays in
    [0, max_value]. Every level has chains of every length, so a hard problem is not longer than
    the easy ones: it has more of the steps the model gets wrong most (additions and subtractions
    over the whole value range; a x step needs a value of at most max_value / 2)."""
    shortest, longest = PLUS_MINUS_LENGTH
    length = rng.randint(max(shortest, level), longest)
    for _ in range(100_000):
        kinds = [["+", "-"]] * level + [["*"]] * (length - level)
        rng.shuffle(kinds)
        start = value = rng.randint(1, 9)
        operations = []
        for operators in kinds:
            candidates = _bounded_operations(value, operators, max_value)
            if not candidates:
                break
            operator, operand = rng.choice(candidates)
            operations.append((operator, operand))
            value = _apply(value, operator, operand)
        else:
            steps, value = chain_steps(start, operations)
            return chain_problem_text(start, operations), steps, str(value)
    raise ValueError(f"no level-{level} plus_minus chain of {length} operations stays within [0, {max_value}]")


def make_problem(level: int, subject: str, rng: random.Random, max_value: int | None = None) -> tuple[str, str, str]:
    """(problem, solution, answer) for one expression with `level` operations, redrawn until
    every number of its solution lies in [0, max_value] (when set)."""
    operators = SUBJECT_OPERATORS[subject]
    for _ in range(100_000):
        tokens: list = [rng.randint(1, 9)]
        for _ in range(level):
            operator = rng.choice(operators)
            tokens += [operator, rng.randint(2, 5) if operator == "*" else rng.randint(1, 9)]
        if within(tokens, max_value):
            break
    else:
        raise ValueError(f"no level-{level} {subject} problem keeps its values within [0, {max_value}]")
    sentences, value = solve_steps(tokens)
    problem = f"Compute ${_render(tokens)}$."
    return problem, " ".join(sentences), str(value)


def generate(
    num_problems: int | list[int],
    seed: int,
    split: str,
    exclude: set[str] = frozenset(),
    distinct: bool = True,
    max_value: int | None = None,
    style: str = "expression",
) -> list[dict]:
    """Problems, none of whose text is in `exclude`: `num_problems` with levels and subjects
    balanced, or a list of per-level counts (levels 1..5, subjects balanced within a level).

    Level 1 has only a few hundred distinct expressions, so a large train pool may repeat some
    (`distinct=False`); test problems are always distinct and never in the train pool.
    """
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r} (one of {', '.join(STYLES)})")
    rng = random.Random(f"{seed}-{split}")
    subjects = [PLUS_MINUS_SUBJECT] if style == "plus_minus" else list(SUBJECT_OPERATORS)
    if isinstance(num_problems, int):
        cells = [(level, subject) for level in LEVELS for subject in subjects]
        plan = [cells[index % len(cells)] for index in range(num_problems)]
    else:
        if len(num_problems) != len(LEVELS):
            raise ValueError(f"per-level counts need one number per level {LEVELS}, got {num_problems}")
        plan = [
            (level, subjects[index % len(subjects)])
            for level, count in zip(LEVELS, num_problems)
            for index in range(count)
        ]
    rows, seen = [], set()
    attempts = 0
    while len(rows) < len(plan):
        level, subject = plan[len(rows)]
        if style == "expression":
            problem, solution, answer = make_problem(level, subject, rng, max_value)
        else:
            if style == "chain":
                problem, steps, answer = make_chain_problem(level, subject, rng, max_value)
            else:
                problem, steps, answer = make_plus_minus_problem(level, rng, max_value)
            solution = STEP_SEPARATOR.join(steps) + f" The answer is $\\boxed{{{answer}}}$."
        attempts += 1
        if attempts > 100 * max(len(plan), 1):
            raise ValueError(f"cannot draw {len(plan)} distinct synthetic problems")
        if problem in exclude or (distinct and problem in seen):
            continue
        seen.add(problem)
        rows.append(
            {
                "problem": problem,
                "solution": solution,
                "answer": answer,
                "subject": subject,
                "level": level,
                "unique_id": f"synthetic/{split}/{len(rows)}",
                **({"steps": steps} if style != "expression" else {}),
            }
        )
    return rows


def generate_splits(
    num_train: int | list[int], num_test: int, seed: int, max_value: int | None = None, style: str = "expression"
) -> tuple[list[dict], list[dict]]:
    """A train pool (a total, balanced, or per-level counts) and a balanced held-out test set
    with no problem in common."""
    test = generate(num_test, seed, "test", max_value=max_value, style=style)
    train = generate(
        num_train,
        seed,
        "train",
        exclude={row["problem"] for row in test},
        distinct=False,
        max_value=max_value,
        style=style,
    )
    return train, test


# ---------------------------------------------------------------------------------------------
# The step labeller: the offline analogue of PRM800K's human labels, for EASY problems only


_PROBLEM = re.compile(r"^Compute \$(.+)\$\.$")
_TOKEN = {"+": "+", "-": "-", "\\times": "*"}


def parse_expression(problem: str) -> list:
    """``[n, op, n, ...]`` of a synthetic problem ("Compute $3 + 4 \\times 2$.")."""
    match = _PROBLEM.match(problem.strip())
    if not match:
        raise ValueError(f"not a synthetic arithmetic problem: {problem!r}")
    tokens = []
    for index, word in enumerate(match.group(1).split()):
        tokens.append(_TOKEN[word] if index % 2 else int(word))
    return tokens


_CHAIN_PROBLEM = re.compile(r"^Start with (\d+), then apply (.+) in this order\. What is the result\?$")
_CHAIN_OPERATION = re.compile(r"^([+×-]) (\d+)$")
_CHAIN_OPERATOR = {symbol: operator for operator, symbol in _CHAIN_SYMBOL.items()}


def parse_chain(problem: str) -> tuple[int, list[tuple[str, int]]] | None:
    """(start, operations) of a chain-style problem; None for any other text."""
    match = _CHAIN_PROBLEM.match(problem.strip())
    if not match:
        return None
    operations = []
    for part in match.group(2).split(", "):
        operation = _CHAIN_OPERATION.match(part)
        if not operation:
            raise ValueError(f"not a chain operation {part!r} in {problem!r}")
        operations.append((_CHAIN_OPERATOR[operation.group(1)], int(operation.group(2))))
    return int(match.group(1)), operations


def _chain_step(text: str) -> str:
    """A sampled chain step as compared with the reference: whitespace-normalised, no final period."""
    return " ".join(text.split()).rstrip(".").strip()


def _math_spans(text: str) -> list[str]:
    """The $...$ spans of a step, whitespace-normalised, \\boxed{} unwrapped."""
    spans = re.findall(r"\$([^$]*)\$", text)
    return [" ".join(re.sub(r"\\boxed\{([^{}]*)\}", r"\1", span).split()) for span in spans]


def reference_spans(tokens: list) -> list[list[str]]:
    """Per reference step, the math it must state: the computation and what it leaves."""
    tokens, spans = list(tokens), []
    while len(tokens) > 1:
        left, operator, right, value, tokens = next_operation(tokens)
        spans.append([f"{_render([left, operator, right])} = {value}", _render(tokens)])
    return spans


def label_steps(problem: str, level: int, steps: list[str], answer: str | None, easy_levels) -> list[float | None]:
    """PRM800K-style labels of a sampled solution to an EASY synthetic problem, one per unit
    (each step, then the answer section when there is one): a step is correct (1.0) when it
    states exactly the next operation of the reference order with its right value (chain style:
    "v op b = w." with v the previous value; expression style: also the right remaining
    expression); the first wrong step gets 0.0 and, as a PRM800K labeller stops at the
    first error, every later unit is unlabelled (None). The answer is labelled when every step
    was correct: 1.0 if it is the value of the expression.

    This is supervision: it refuses problems outside `easy_levels`, so it can never label a hard
    problem (tests/test_synthetic.py and the DAG's leakage test check the callers)."""
    if level not in set(easy_levels):
        raise ValueError(f"the step labeller is supervision for easy problems only; got level {level} ({problem!r})")
    chain = parse_chain(problem)
    if chain:  # a step states "v op b = w."
        reference_steps, reference_value = chain_steps(*chain)
        stated = _chain_step
        reference = [stated(step) for step in reference_steps]
    else:  # a step states the computation and the remaining expression
        tokens = parse_expression(problem)
        reference, reference_value = reference_spans(tokens), solve_steps(tokens)[1]

        def stated(step: str) -> list[str]:
            return _math_spans(step)[:2]

    labels: list[float | None] = []
    wrong = False
    for index, step in enumerate(steps):
        if wrong:
            labels.append(None)
            continue
        correct = index < len(reference) and stated(step) == reference[index]
        labels.append(1.0 if correct else 0.0)
        wrong = not correct
    if answer is not None:
        complete = not wrong and len(steps) == len(reference)
        labels.append(None if wrong else float(complete and " ".join(answer.split()) == str(reference_value)))
    return labels
