"""A levelled arithmetic dataset the project generates itself (the offline default).

Level L asks for the value of an expression with L operations on one-digit numbers (factors
after a x are 2-5), so harder levels need longer chains of the same skills -- the easy-to-hard
structure of MATH in miniature. With `max_value`, every number a solution writes stays in
[0, max_value], so hard problems need no arithmetic fact that easy ones never show: only the
chain is longer.
Two subjects give the validation split a subject x level stratification to match:
"Addition and Subtraction" (+, -) and "Mixed Operations" (+, -, x with precedence).

Rows use the MATH schema (problem, solution, answer, subject, level, unique_id); the solution is
MATH-style prose with one sentence per operation and a final ``\\boxed{}``, so the synthetic data
goes through exactly the same loaders, splitter and step heuristics as the real MATH files.
"""

from __future__ import annotations

import random
import re

SUBJECT_OPERATORS = {
    "Addition and Subtraction": ["+", "-"],
    "Mixed Operations": ["+", "-", "*"],
}
LEVELS = (1, 2, 3, 4, 5)
_LATEX = {"+": "+", "-": "-", "*": "\\times"}


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
    num_problems: int | list[int], seed: int, split: str, exclude: set[str] = frozenset(), distinct: bool = True,
    max_value: int | None = None,
) -> list[dict]:
    """Problems, none of whose text is in `exclude`: `num_problems` with levels and subjects
    balanced, or a list of per-level counts (levels 1..5, subjects balanced within a level).

    Level 1 has only a few hundred distinct expressions, so a large train pool may repeat some
    (`distinct=False`); test problems are always distinct and never in the train pool.
    """
    rng = random.Random(f"{seed}-{split}")
    if isinstance(num_problems, int):
        cells = [(level, subject) for level in LEVELS for subject in SUBJECT_OPERATORS]
        plan = [cells[index % len(cells)] for index in range(num_problems)]
    else:
        if len(num_problems) != len(LEVELS):
            raise ValueError(f"per-level counts need one number per level {LEVELS}, got {num_problems}")
        subjects = list(SUBJECT_OPERATORS)
        plan = [(level, subjects[index % len(subjects)])
                for level, count in zip(LEVELS, num_problems) for index in range(count)]
    rows, seen = [], set()
    attempts = 0
    while len(rows) < len(plan):
        level, subject = plan[len(rows)]
        problem, solution, answer = make_problem(level, subject, rng, max_value)
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
            }
        )
    return rows


def generate_splits(num_train: int | list[int], num_test: int, seed: int,
                    max_value: int | None = None) -> tuple[list[dict], list[dict]]:
    """A train pool (a total, balanced, or per-level counts) and a balanced held-out test set
    with no problem in common."""
    test = generate(num_test, seed, "test", max_value=max_value)
    train = generate(num_train, seed, "train", exclude={row["problem"] for row in test}, distinct=False,
                     max_value=max_value)
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
    states exactly the next operation of the reference order with its right value and the right
    remaining expression; the first wrong step gets 0.0 and, as a PRM800K labeller stops at the
    first error, every later unit is unlabelled (None). The answer is labelled when every step
    was correct: 1.0 if it is the value of the expression.

    This is supervision: it refuses problems outside `easy_levels`, so it can never label a hard
    problem (tests/test_synthetic.py and the DAG's leakage test check the callers)."""
    if level not in set(easy_levels):
        raise ValueError(f"the step labeller is supervision for easy problems only; got level {level} ({problem!r})")
    tokens = parse_expression(problem)
    reference = reference_spans(tokens)
    labels: list[float | None] = []
    wrong = False
    for index, step in enumerate(steps):
        if wrong:
            labels.append(None)
            continue
        correct = index < len(reference) and _math_spans(step)[:2] == reference[index]
        labels.append(1.0 if correct else 0.0)
        wrong = not correct
    if answer is not None:
        value = str(solve_steps(tokens)[1])
        complete = not wrong and len(steps) == len(reference)
        labels.append(None if wrong else float(complete and " ".join(answer.split()) == value))
    return labels
