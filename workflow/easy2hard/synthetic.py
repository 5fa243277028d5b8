"""A levelled arithmetic dataset the project generates itself (the offline default).

Level L asks for the value of an expression with L operations on one-digit numbers (factors
after a x are 2-5), so harder
levels need longer chains of the same skills -- the easy-to-hard structure of MATH in miniature.
Two subjects give the validation split a subject x level stratification to match:
"Addition and Subtraction" (+, -) and "Mixed Operations" (+, -, x with precedence).

Rows use the MATH schema (problem, solution, answer, subject, level, unique_id); the solution is
MATH-style prose with one sentence per operation and a final ``\\boxed{}``, so the synthetic data
goes through exactly the same loaders, splitter and step heuristics as the real MATH files.
"""

from __future__ import annotations

import random

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


def solve_steps(tokens: list) -> tuple[list[str], int]:
    """Evaluate ``[n, op, n, op, ...]`` one operation at a time (x first, then left to right).

    Returns one sentence per operation and the value.
    """
    tokens = list(tokens)
    sentences = []
    while len(tokens) > 1:
        operators = tokens[1::2]
        position = 2 * operators.index("*") + 1 if "*" in operators else 1
        left, operator, right = tokens[position - 1], tokens[position], tokens[position + 1]
        value = _apply(left, operator, right)
        tokens[position - 1 : position + 2] = [value]
        computed = f"${_render([left, operator, right])} = {value}$"
        if len(tokens) > 1:
            sentences.append(f"We compute {computed}, so the expression becomes ${_render(tokens)}$.")
        else:
            sentences.append(f"Finally, we compute {computed}, so the answer is $\\boxed{{{value}}}$.")
    return sentences, tokens[0]


def make_problem(level: int, subject: str, rng: random.Random) -> tuple[str, str, str]:
    """(problem, solution, answer) for one expression with `level` operations."""
    operators = SUBJECT_OPERATORS[subject]
    tokens: list = [rng.randint(1, 9)]
    for _ in range(level):
        operator = rng.choice(operators)
        tokens += [operator, rng.randint(2, 5) if operator == "*" else rng.randint(1, 9)]
    sentences, value = solve_steps(tokens)
    problem = f"Compute ${_render(tokens)}$."
    return problem, " ".join(sentences), str(value)


def generate(
    num_problems: int, seed: int, split: str, exclude: set[str] = frozenset(), distinct: bool = True
) -> list[dict]:
    """`num_problems` problems, levels and subjects balanced, none of whose text is in `exclude`.

    Level 1 has only a few hundred distinct expressions, so a large train pool may repeat some
    (`distinct=False`); test problems are always distinct and never in the train pool.
    """
    rng = random.Random(f"{seed}-{split}")
    cells = [(level, subject) for level in LEVELS for subject in SUBJECT_OPERATORS]
    rows, seen = [], set()
    attempts = 0
    while len(rows) < num_problems:
        level, subject = cells[len(rows) % len(cells)]
        problem, solution, answer = make_problem(level, subject, rng)
        attempts += 1
        if attempts > 100 * max(num_problems, 1):
            raise ValueError(f"cannot draw {num_problems} distinct synthetic problems")
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


def generate_splits(num_train: int, num_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A train pool and a held-out test set with no problem in common."""
    test = generate(num_test, seed, "test")
    train = generate(num_train, seed, "train", exclude={row["problem"] for row in test}, distinct=False)
    return train, test
