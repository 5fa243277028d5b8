r"""Answer grading for MATH: normalisation, equivalence under a hard timeout, answer clustering.

``is_equivalent(pred, gold)`` decides in three tiers:

1. In-process and exact: equal normalised strings; two rational literals (``0.5``,
   ``\frac{1}{2}``, ``-3``) compared as fractions; two plain words compared case-insensitively.
2. Otherwise a symbolic check in a worker process: math-verify ``parse``/``verify``, then a
   PRM800K-style sympy comparison (tuples and intervals element-wise, brackets must agree).
3. The worker runs under a hard timeout (pebble kills and replaces it); timeout or error -> False.

The normaliser follows what the Hendrycks MATH normaliser and the PRM800K grader do (units,
``\text{}``, ``dfrac``, ``\frac12``, ``x =``, thousands commas, ...), written from scratch.
Deliberate differences from PRM800K: the symbolic tier is lenient (``\frac{2}{4}`` equals
``\frac12``; PRM800K requires reduced fractions and exact integers), while rational literals
are compared exactly (``0.333333`` is not ``\frac13``, although math-verify alone would say so).

Worker processes come from a ``forkserver`` that preloads this module, sympy and math-verify,
so replacing a killed worker is a cheap fork. As with any forkserver/spawn multiprocessing,
scripts that call the pool must guard their entry point with ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import re
import string
import threading
from collections.abc import Sequence
from fractions import Fraction

import pebble
from tqdm import tqdm

from easy2hard.formats import extract_answer

__all__ = [
    "GRADER_VERSION",
    "cluster_answers",
    "extract_answer",
    "grade_many",
    "is_equivalent",
    "normalize_answer",
]

GRADER_VERSION = f"easy2hard-grader-1 + math-verify {importlib.metadata.version('math-verify')}"

# ---------------------------------------------------------------------------------------------
# Normalisation (pure string rewriting; never raises, linear-ish in the input length)

_UNICODE = str.maketrans(
    {
        "\u2212": "-",
        "\u2013": "-",
        "\u00a0": " ",
        "\u03c0": r"\pi ",
        "\u221a": r"\sqrt",
        "\u00d7": r"\times ",
        "\u00b7": r"\cdot ",
        "\u00b0": r"^\circ",
        "\u221e": r"\infty ",
        "\u2264": r"\le ",
        "\u2265": r"\ge ",
    }
)
_TEXT_COMMAND = re.compile(
    r"\\(?:text|textrm|textbf|textit|textsf|textnormal|mbox|mathrm|mathbf|mathit|operatorname)\s*\{"
)
_LAYOUT = re.compile(
    r"\\(?:left|right|[bB]igg?[lr]?)(?:\.|(?![A-Za-z]))|\\displaystyle(?![A-Za-z])"
)
_SPACING = re.compile(r"(?<!\\)\\[,;: ]|\\q?quad(?![A-Za-z])|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree(?![A-Za-z])")
_MACROS = [
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\leq(?![A-Za-z])"), r"\\le"),
    (re.compile(r"\\geq(?![A-Za-z])"), r"\\ge"),
    (re.compile(r"\\neq(?![A-Za-z])"), r"\\ne"),
    (re.compile(r"\\varnothing(?![A-Za-z])"), r"\\emptyset"),
    (re.compile(r"\\lbrace(?![A-Za-z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![A-Za-z])"), r"\\}"),
]
_UNIT_WORDS = (
    r"(?:(?:square|sq\.?|cubic) ?)?(?:units?|cm|mm|km|meters?|centimeters?|inch(?:es)?|feet|foot|ft"
    r"|yards?|miles?|seconds?|minutes?|hours?|days?|weeks?|months?|years?|degrees?|dollars?"
    r"|cents?|mph|pounds?|ounces?)"
)
_NUMBER_WITH_UNIT = re.compile(
    r"(-?[\d.,/]+|-?\\frac\{\d+\}\{\d+\})\s*" + _UNIT_WORDS + r"(?:\^\{?[23]\}?)?\.?"
)
_LIST_WORD = re.compile(r"\\(?:text|mbox)\s*\{\s*(?:and|or)\s*\}")  # "1 \text{ or } 2" is a list
_TRAILING_UNIT_TEXT = re.compile(r"\s*[A-Za-z][A-Za-z\s.]*")
_AFTER_UNIT = re.compile(r"(?:\^\{?[23]\}?)?\s*\.?\s*")
_ASSIGNMENT = re.compile(r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?'?(?:=|\\in)(?P<value>[^=]+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"-?\d+\.\d+")
_SLASH_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
_MIXED_NUMBER = re.compile(r"(-?)(\d{1,12})\\frac\{(\d{1,12})\}\{(\d{1,12})\}")
_CHOICE = re.compile(r"\(([A-Z])\)")
_WRAPPERS = (("$", "$"), (r"\(", r"\)"), (r"\[", r"\]"))
_BOX_OPENER = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|.", re.DOTALL)


def normalize_answer(answer: str | None) -> str | None:
    r"""Canonical string form of a final answer (None for None or an empty answer).

    Two answers with the same normal form are equivalent; the converse needs ``is_equivalent``.
    """
    if answer is None:
        return None
    text = _peel(str(answer).translate(_UNICODE))
    text = _SPACING.sub(" ", _LAYOUT.sub("", text).replace(r"\!", ""))
    text = _DEGREES.sub("", text)
    text = text.replace(r"\%", "").replace("%", "").replace(r"\$", "").replace("$", "")
    text = _LIST_WORD.sub(",", text)
    text = _remove_text_commands(text).replace("{,}", ",").strip()
    if _THOUSANDS.fullmatch(text):  # before squashing spaces: "2, 500" is a list, "2,500" is not
        text = text.replace(",", "")
    text = re.sub(r",+", ",", _squash_whitespace(text))  # "7, -2, \text{ and } -5"
    for pattern, replacement in _MACROS:
        text = pattern.sub(replacement, text)
    text = _brace_arguments(text)
    text = _peel(_strip_number_unit(text))
    assignment = _ASSIGNMENT.fullmatch(text)
    if assignment:
        text = _peel(assignment["value"])
    text = _canonical_number(text)
    choice = _CHOICE.fullmatch(text)
    return (choice[1] if choice else text) or None


def _peel(text: str) -> str:
    r"""Strip wrappers around the whole answer: spaces, final period/comma, $ \( \[, \boxed, {}.

    Works on a window [start, end) of the text with one brace map, so deep nesting stays linear.
    """
    braces = _matching_braces(text)
    start, end = 0, len(text)
    while True:
        window = (start, end)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start and text[end - 1] in ".," and text[end - 2 : end - 1] != "\\":
            end -= 1
        for opener, closer in _WRAPPERS:
            inner = end - start - len(opener) - len(closer)
            if inner >= 0 and text.startswith(opener, start) and text.endswith(closer, start, end):
                start, end = start + len(opener), end - len(closer)
        box = _BOX_OPENER.match(text, start)
        if box and braces.get(box.end() - 1) == end - 1:
            start, end = box.end(), end - 1
        elif text.startswith("{", start) and braces.get(start) == end - 1:
            start, end = start + 1, end - 1
        if (start, end) == window:
            return text[start:end]


def _matching_braces(text: str) -> dict[int, int]:
    r"""Index of each unescaped "{" -> index of its matching "}" (unmatched ones are left out)."""
    pairs, stack = {}, []
    for index, char in enumerate(text):
        if index and text[index - 1] == "\\":
            continue
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
    return pairs


def _remove_text_commands(text: str) -> str:
    r"""``\text{...}`` and friends: a trailing unit after a value is dropped, else unwrapped."""
    braces = _matching_braces(text)
    drop = bytearray(len(text))  # 1 = delete this character
    for match in _TEXT_COMMAND.finditer(text):
        close = braces.get(match.end() - 1)
        if close is None:
            continue
        content = text[match.end() : close]
        after = _AFTER_UNIT.match(text, close + 1)
        is_unit = (
            after.end() == len(text)
            and text[: match.start()].strip()
            and _TRAILING_UNIT_TEXT.fullmatch(content)
        )
        if is_unit:
            drop[match.start() :] = b"\x01" * (len(text) - match.start())
        else:
            drop[match.start() : match.end()] = b"\x01" * (match.end() - match.start())
            drop[close] = 1
    return "".join(char for char, gone in zip(text, drop) if not gone)


def _squash_whitespace(text: str) -> str:
    r"""Drop whitespace, except the one space that ends a control word before a letter (\pi r)."""
    text = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x00", text)
    return re.sub(r"\s+", "", text).replace("\x00", " ")


def _brace_arguments(text: str) -> str:
    r"""``\frac12`` -> ``\frac{1}{2}``, ``\sqrt2`` -> ``\sqrt{2}`` (single-token arguments only)."""
    braces = _matching_braces(text)
    edits: set[int] = set()  # start of each single-token argument; its end is _TOKEN's match
    for match in re.finditer(r"\\(frac|sqrt)(?![A-Za-z])", text):
        position = match.end()
        if match[1] == "sqrt" and text.startswith("[", position):
            position = text.find("]", position) + 1
            if position == 0:
                continue
        for _ in range(2 if match[1] == "frac" else 1):
            while position < len(text) and text[position] == " ":
                position += 1
            if position >= len(text) or text[position] == "}":
                break
            if text[position] == "{":
                position = braces.get(position, len(text) - 1) + 1
                continue
            edits.add(position)
            position = _TOKEN.match(text, position).end()
    pieces, previous = [], 0
    for start in sorted(edits):
        end = _TOKEN.match(text, start).end()
        pieces += [text[previous:start], "{", text[start:end], "}"]
        previous = end
    return "".join(pieces) + text[previous:]


def _strip_number_unit(text: str) -> str:
    """``5cm`` / ``12 inches`` -> the number (only when the whole answer is number + unit)."""
    match = _NUMBER_WITH_UNIT.fullmatch(text)
    return match[1] if match else text


def _canonical_number(text: str) -> str:
    r"""``.5`` -> ``0.5`` anywhere; for a whole-answer number also ``0.50`` -> ``0.5``,
    ``1/2`` -> ``\frac{1}{2}`` and the mixed number ``2\frac{1}{2}`` -> ``\frac{5}{2}``.
    """
    text = re.sub(r"(?<![\w.])\.(?=\d)", "0.", text)
    if _DECIMAL.fullmatch(text):
        return text.rstrip("0").rstrip(".")
    slash = _SLASH_FRACTION.fullmatch(text)
    if slash:
        return rf"{slash[1]}\frac{{{slash[2]}}}{{{slash[3]}}}"
    mixed = _MIXED_NUMBER.fullmatch(text)
    if mixed and int(mixed[3]) < int(mixed[4]):  # a proper fraction after an integer: mixed number
        numerator = int(mixed[2]) * int(mixed[4]) + int(mixed[3])
        return rf"{mixed[1]}\frac{{{numerator}}}{{{mixed[4]}}}"
    return text


# ---------------------------------------------------------------------------------------------
# Equivalence: exact in-process rules, then the symbolic check in a worker process

_RATIONAL_LITERAL = re.compile(r"(-?)(?:(\d+(?:\.\d+)?)|\\frac\{(-?\d+)\}\{(-?\d+)\})")
_WORD = re.compile(r"[A-Za-z]{3,}")


def is_equivalent(pred: str | None, gold: str | None, timeout: float = 5.0) -> bool:
    """Whether a predicted final answer matches the gold one (False on None/empty or timeout)."""
    return _grade_normalized([(normalize_answer(pred), normalize_answer(gold))], timeout)[0]


def grade_many(
    pairs: Sequence[tuple[str | None, str | None]],
    timeout: float = 5.0,
    workers: int | None = None,
    progress: bool = False,
) -> list[bool]:
    """``is_equivalent`` over (pred, gold) pairs, slow checks in parallel; order preserved.

    ``workers`` sets the size of the shared pool (None: as before, at first one per CPU).
    """
    normalized = [(normalize_answer(pred), normalize_answer(gold)) for pred, gold in pairs]
    return _grade_normalized(normalized, timeout, workers, progress)


def cluster_answers(answers: Sequence[str | None], timeout: float = 5.0, workers: int | None = None) -> list[int]:
    """Cluster id per answer for majority voting (first-appearance order; -1 for no answer).

    Each distinct normal form joins the earliest cluster whose representative (first member)
    it is equivalent to, else founds a new cluster: deterministic, and no chaining a~b~c.
    """
    normalized = [normalize_answer(answer) for answer in answers]
    representatives: list[str] = []
    cluster_of: dict[str, int] = {}
    for form in dict.fromkeys(form for form in normalized if form is not None):
        verdicts = _grade_normalized([(form, rep) for rep in representatives], timeout, workers)
        cluster_of[form] = verdicts.index(True) if True in verdicts else len(representatives)
        if cluster_of[form] == len(representatives):
            representatives.append(form)
    return [-1 if form is None else cluster_of[form] for form in normalized]


def _grade_normalized(
    pairs: Sequence[tuple[str | None, str | None]],
    timeout: float,
    workers: int | None = None,
    progress: bool = False,
) -> list[bool]:
    """Verdicts for normalised pairs: in-process where decidable, the rest on the pool."""
    verdicts = [_decide_in_process(pred, gold) for pred, gold in pairs]
    slow = [index for index, verdict in enumerate(verdicts) if verdict is None]
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(slow), disable=not progress, unit="pair")
    if slow:
        pool = _shared_pool(workers)
        futures = {index: pool.schedule(_symbolic_equivalent, args=pairs[index], timeout=timeout) for index in slow}
        for index, future in futures.items():
            verdicts[index] = _result_or_false(future)
            bar.update(1)
    bar.close()
    return verdicts


def _decide_in_process(pred: str | None, gold: str | None) -> bool | None:
    """Exact verdicts that need no sympy; None when the symbolic check must decide."""
    if pred is None or gold is None:
        return False
    if pred == gold:
        return True
    pred_value, gold_value = _rational(pred), _rational(gold)
    if pred_value is not None and gold_value is not None:
        return pred_value == gold_value
    if _WORD.fullmatch(pred) and _WORD.fullmatch(gold):
        # Plain words (names, days); sympy would read them as products of letters.
        return pred.casefold() == gold.casefold()
    return None


def _rational(text: str) -> Fraction | None:
    r"""The value of an integer, decimal or integer ``\frac``, else None."""
    match = _RATIONAL_LITERAL.fullmatch(text)
    if not match:
        return None
    sign = -1 if match[1] else 1
    try:
        if match[2] is not None:
            return sign * Fraction(match[2])
        return sign * Fraction(int(match[3]), int(match[4]))
    except (ValueError, ZeroDivisionError):  # x/0, or past Python's 4300-digit int() limit
        return None


def _result_or_false(future: pebble.ProcessFuture) -> bool:
    """A worker's verdict; a timeout (worker killed), crash or exception counts as False."""
    try:
        return bool(future.result())
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# Worker side (runs in pool processes only)


def _symbolic_equivalent(pred: str, gold: str) -> bool:
    """math-verify, then the PRM800K-style sympy comparison; the caller enforces the timeout."""
    return _math_verify_equal(pred, gold) or _sympy_equal(pred, gold)


def _math_verify_equal(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    # Its signal.alarm timeouts are off: the pool's process-level timeout replaces them.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # Normal forms have no spaces; without one after a comma, "2,500" would read as 2500.
    pred, gold = pred.replace(",", ", "), gold.replace(",", ", ")
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=None)
        pred_parsed = parse(f"${pred}$", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:
        return False


def _sympy_equal(pred: str, gold: str) -> bool:
    """Element-wise ``simplify(a - b) == 0`` with matching brackets, as the PRM800K grader."""
    pred_open, pred_items, pred_close = _split_bracketed(pred)
    gold_open, gold_items, gold_close = _split_bracketed(gold)
    if (pred_open, pred_close, len(pred_items)) != (gold_open, gold_close, len(gold_items)):
        return False
    try:
        return all(_sympy_items_equal(a, b) for a, b in zip(pred_items, gold_items))
    except Exception:
        return False


def _split_bracketed(text: str) -> tuple[str, list[str], str]:
    """``(a,b]`` -> ("(", [a, b], "]"); anything else is one item with no brackets."""
    if len(text) < 2 or text[0] not in "([" or text[-1] not in ")]":
        return "", [text], ""
    items, depth, start = [], 0, 1
    for index, char in enumerate(text[1:-1], start=1):
        depth += (char in "([{") - (char in ")]}")
        if depth < 0:  # "(1)+(2)": the first bracket closes early, so it is not a wrapper
            return "", [text], ""
        if char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    return text[0], items + [text[start:-1]], text[-1]


def _sympy_items_equal(pred: str, gold: str) -> bool:
    import sympy

    pred_expr, gold_expr = _to_sympy(pred), _to_sympy(gold)
    if pred_expr is None or gold_expr is None:
        return False
    return sympy.simplify(pred_expr - gold_expr) == 0


_LATEX_TO_PYTHON = [
    (re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}"), r"((\1)/(\2))"),
    (re.compile(r"\\sqrt\[([^{}\[\]]*)\]\{([^{}]*)\}"), r"((\2)**(1/(\1)))"),
    (re.compile(r"\\sqrt\{([^{}]*)\}"), r" sqrt(\1)"),
    (re.compile(r"\^\{([^{}]*)\}"), r"**(\1)"),
    (re.compile(r"\{([^{}]*)\}"), r"(\1)"),
]
_SYMBOLS = [
    (r"\cdot", "*"),
    (r"\times", "*"),
    (r"\div", "/"),
    (r"\pi", " pi "),
    (r"\infty", " oo "),
    ("^", "**"),
]
_SAFE_PYTHON = re.compile(r"[0-9A-Za-z+\-*/(). ]*")


def _to_sympy(latex: str):
    """A small LaTeX subset -> sympy, or None. Only whitelisted names reach ``parse_expr``."""
    import sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    text, previous = latex, None
    while text != previous:  # innermost groups first
        previous = text
        for pattern, replacement in _LATEX_TO_PYTHON:
            text = pattern.sub(replacement, text)
    for old, new in _SYMBOLS:
        text = text.replace(old, new)
    if not text.strip() or not _SAFE_PYTHON.fullmatch(text):
        return None
    # Every other letter run is a product of one-letter symbols, so parse_expr never sees a
    # Python name (it evals its input).
    text = re.sub(
        r"[A-Za-z]+", lambda m: m[0] if m[0] in ("sqrt", "pi", "oo") else " ".join(m[0]), text
    )
    symbols = {letter: sympy.Symbol(letter) for letter in string.ascii_letters}
    transformations = standard_transformations + (implicit_multiplication_application,)
    return parse_expr(text, local_dict=symbols, transformations=transformations)


# ---------------------------------------------------------------------------------------------
# The worker pool: lazily created, shared by threads, forgotten in forked children

_pool_lock = threading.Lock()
_pool: pebble.ProcessPool | None = None
_pool_pid: int | None = None
_pool_workers: int | None = None  # the size last asked for; None: one per CPU


def _shared_pool(workers: int | None = None) -> pebble.ProcessPool:
    """The module's pool, created on first use (again after a fork: the parent owns the old),
    and resized when a caller asks for another number of workers."""
    global _pool, _pool_pid, _pool_workers
    with _pool_lock:
        if workers is not None and workers != _pool_workers:
            _pool_workers = workers
            if _pool is not None and _pool_pid == os.getpid():
                _pool.stop()
                _pool.join()
            _pool = None
        if _pool is None or _pool_pid != os.getpid() or not _pool.active:
            _pool = _new_pool(_pool_workers or _cpu_count())
            _pool_pid = os.getpid()
        return _pool


def _new_pool(workers: int) -> pebble.ProcessPool:
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a server that already imported the heavy modules: restarts are cheap.
    context.set_forkserver_preload(["easy2hard.grading", "sympy", "math_verify"])
    return pebble.ProcessPool(max_workers=max(1, workers), context=context)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _after_fork_in_child() -> None:
    global _pool_lock
    # A lock held by another parent thread at fork time would stay locked forever here.
    _pool_lock = threading.Lock()
    # The parent's forkserver is not this process's child (waitpid on it fails), so forget it
    # and let the next pool start one of its own. ForkServer has no public reset.
    server = multiprocessing.forkserver._forkserver
    try:
        if server._forkserver_alive_fd is not None:
            os.close(server._forkserver_alive_fd)
        server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
        server._lock = threading.Lock()
    except AttributeError:  # another Python's private layout: leave it (children rarely grade)
        pass


@atexit.register
def _shutdown_pool() -> None:
    if _pool is not None and _pool_pid == os.getpid():
        _pool.stop()
        _pool.join()


os.register_at_fork(after_in_child=_after_fork_in_child)
