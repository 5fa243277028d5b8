r"""Answer grading for MATH: normalisation, equivalence under a hard timeout, answer clustering.

Two modes (``grading.mode``; every stage grades with the configured one, and the evaluation
stage records both verdicts):

* ``lenient`` (default): ``is_equivalent(pred, gold)`` decides in three tiers:

  1. In-process and exact: equal normalised strings; two rational literals (``0.5``,
     ``\frac{1}{2}``, ``-3``) compared as fractions; two plain words compared case-insensitively;
     a tuple, interval or list against a value or a sequence of another length is False.
  2. Otherwise a symbolic check in a worker process: math-verify ``parse``/``verify``, then a
     PRM800K-style sympy comparison (tuples and intervals element-wise, brackets must agree).
  3. The worker runs under a hard timeout: past it the worker is killed and the pair counts as
     not equivalent (``GradingStats.timeouts``). A worker that dies, breaks or cannot start is
     no verdict: the check is repeated on a fresh worker, then ``GradingError`` is raised.

* ``prm800k``: the authors' grader (the PRM800K ``grade_answer`` with its sympy path switched
  off, as in Edward-Sun/easy-to-hard): two string normal forms, nothing symbolic, so unreduced
  fractions and decimals for fractions are wrong (``easy2hard.prm800k``, written from scratch).

The lenient normaliser follows what the Hendrycks MATH normaliser and the PRM800K grader do
(units, ``\text{}``, ``dfrac``, ``\frac12``, ``x =``, thousands commas including ``1,\! 000``,
percent signs and words, mixed numbers ``7 3/4`` / ``2\frac12``, ...), written from scratch.
Deliberate differences from PRM800K: the symbolic tier is lenient (``\frac{2}{4}`` equals
``\frac12``; PRM800K requires reduced fractions and exact integers), while rational literals
are compared exactly (``0.333333`` is not ``\frac13``, although math-verify alone would say so).

Workers are separate interpreters (``easy2hard.grading_workers``) rather than multiprocessing
children: those re-import the caller's ``__main__``, which broke unguarded scripts and code read
from stdin. So any calling context works: scripts with or without a ``__main__`` guard,
``python -``, ``python -c``, notebooks, threads, forked children and Snakemake ``run:`` blocks.
Throughput comes from deciding each distinct normalised pair once (samples repeat answers),
caching normal forms and verdicts per process, and running symbolic checks in parallel.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import string
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

from tqdm import tqdm

from easy2hard import grading_workers, prm800k
from easy2hard.formats import extract_answer

log = logging.getLogger(__name__)

__all__ = [
    "GRADER_VERSION",
    "MODES",
    "GradingError",
    "GradingStats",
    "cluster_answers",
    "cluster_many",
    "extract_answer",
    "grade_many",
    "is_equivalent",
    "normalize_answer",
]

GRADER_VERSION = f"easy2hard-grader-2 + math-verify {importlib.metadata.version('math-verify')}"

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
_LAYOUT = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?:\.|(?![A-Za-z]))|\\displaystyle(?![A-Za-z])")
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
    r"|cents?|mph|pounds?|ounces?|percent|per ?cent)"
)
_NUMBER_WITH_UNIT = re.compile(r"(-?[\d.,/]+|-?\\frac\{\d+\}\{\d+\})\s*" + _UNIT_WORDS + r"(?:\^\{?[23]\}?)?\.?")
_LIST_WORD = re.compile(r"\\(?:text|mbox)\s*\{\s*(?:and|or)\s*\}")  # "1 \text{ or } 2" is a list
_TRAILING_UNIT_TEXT = re.compile(r"\s*[A-Za-z][A-Za-z\s.]*")
_AFTER_UNIT = re.compile(r"(?:\^\{?[23]\}?)?\s*\.?\s*")
_ASSIGNMENT = re.compile(r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?'?(?:=|\\in)(?P<value>[^=]+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# ",\!" is MATH's thousands separator, also with a space after it ("11,\! 111,\! 100")
_MARKED_THOUSANDS = re.compile(r"(\d),\\!\s*(?=\d{3}(?!\d))")
# "7 3/4" is the mixed number 31/4, not 73/4 (whitespace is squashed later)
_SPACED_MIXED_NUMBER = re.compile(r"(-?\d+)\s+(\d+)\s*/\s*(\d+)")
_DECIMAL = re.compile(r"-?\d+\.\d+")
_SLASH_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
_MIXED_NUMBER = re.compile(r"(-?)(\d{1,12})\\frac\{(\d{1,12})\}\{(\d{1,12})\}")
_CHOICE = re.compile(r"\(([A-Z])\)")
_WRAPPERS = (("$", "$"), (r"\(", r"\)"), (r"\[", r"\]"))
_BOX_OPENER = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Real models write a sentence after "# Answer" ("The answer is 240.", "So the final answer is
# $\boxed{7}$. I hope it is correct."): the answer is what follows the phrase (lenient mode only;
# the prm800k mode keeps the authors' strict reading of the whole section).
_ANSWER_PHRASE = re.compile(
    r"(?:(?:so|thus|therefore|hence|finally)\s*,?\s*)?(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:|=)\s*:?\s*(?P<value>.+)",
    re.IGNORECASE | re.DOTALL,
)
_HOPE = re.compile(r"[.\s]*I hope it is correct\.?\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|.", re.DOTALL)


@lru_cache(maxsize=1 << 16)
def normalize_answer(answer: str | None) -> str | None:
    r"""Canonical string form of a final answer (None for None or an empty answer).

    Two answers with the same normal form are equivalent; the converse needs ``is_equivalent``.
    Cached: a run's samples repeat the same answers many times.
    """
    if answer is None:
        return None
    text = _MARKED_THOUSANDS.sub(r"\1", _peel(answer_from_phrase(str(answer).translate(_UNICODE))))
    text = _SPACING.sub(" ", _LAYOUT.sub("", text).replace(r"\!", ""))
    text = _DEGREES.sub("", text)
    text = text.replace(r"\%", "").replace("%", "").replace(r"\$", "").replace("$", "")
    text = _LIST_WORD.sub(",", text)
    text = _remove_text_commands(text).replace("{,}", ",").strip()
    text = _SPACED_MIXED_NUMBER.sub(r"\1\\frac{\2}{\3}", text) if _SPACED_MIXED_NUMBER.fullmatch(text) else text
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


def answer_from_phrase(text: str) -> str:
    """The value of an answer written as a sentence ("The answer is 240." -> "240."); other
    text unchanged."""
    phrase = _ANSWER_PHRASE.fullmatch(_HOPE.sub("", text.strip()))
    return phrase["value"] if phrase and phrase["value"].strip() else text


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
        is_unit = after.end() == len(text) and text[: match.start()].strip() and _TRAILING_UNIT_TEXT.fullmatch(content)
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
MODES = ("lenient", "prm800k")
_CACHE_LIMIT = 1 << 17  # distinct verdicts kept per process (a few MB)
_verdict_cache: dict[tuple[str, str], bool] = {}


class GradingError(RuntimeError):
    """A symbolic check got no verdict: its worker died, broke or could not start, twice."""


@dataclass
class GradingStats:
    """What grading did, for a stage's log and provenance (``as_record``)."""

    pairs: int = 0  # (pred, gold) pairs asked for
    distinct: int = 0  # distinct normalised pairs among them: each is decided once
    cached: int = 0  # distinct pairs decided by an earlier call in this process
    in_process: int = 0  # decided by the exact rules, no worker
    symbolic: int = 0  # sent to a worker
    timeouts: int = 0  # symbolic checks past the timeout: counted as not equivalent
    retries: int = 0  # symbolic checks repeated on a fresh worker after a worker failure

    def as_record(self) -> dict:
        return asdict(self)


def is_equivalent(pred: str | None, gold: str | None, timeout: float = 5.0, mode: str = "lenient") -> bool:
    """Whether a predicted final answer matches the gold one under ``mode`` (False on None/empty,
    or when the symbolic check runs past ``timeout`` seconds; GradingError when it gets no verdict)."""
    return grade_many([(pred, gold)], timeout=timeout, mode=mode)[0]


def grade_many(
    pairs: Sequence[tuple[str | None, str | None]],
    timeout: float = 5.0,
    workers: int | None = None,
    progress: bool = False,
    mode: str = "lenient",
    stats: GradingStats | None = None,
) -> list[bool]:
    """``is_equivalent`` over (pred, gold) pairs; order preserved. Each distinct normalised pair is
    decided once, symbolic checks run in parallel on ``workers`` processes (None: one per CPU),
    and ``stats`` counts what happened (timeouts included)."""
    if mode == "prm800k":
        return _grade_prm800k(pairs, stats if stats is not None else GradingStats())
    _check_mode(mode)
    normalized = [(normalize_answer(pred), normalize_answer(gold)) for pred, gold in pairs]
    return _grade_normalized(normalized, timeout, workers, progress, stats if stats is not None else GradingStats())


def cluster_answers(
    answers: Sequence[str | None],
    timeout: float = 5.0,
    workers: int | None = None,
    mode: str = "lenient",
    stats: GradingStats | None = None,
) -> list[int]:
    """Cluster id per answer for majority voting (first-appearance order; -1 for no answer).

    Each distinct normal form joins the earliest cluster whose representative (first member)
    it is equivalent to, else founds a new cluster: deterministic, and no chaining a~b~c. The
    verdicts between all distinct forms are computed in one parallel batch first.
    """
    return cluster_many([answers], timeout, workers, mode, stats)[0]


def cluster_many(
    groups: Sequence[Sequence[str | None]],
    timeout: float = 5.0,
    workers: int | None = None,
    mode: str = "lenient",
    stats: GradingStats | None = None,
) -> list[list[int]]:
    """``cluster_answers`` for many groups (e.g. the samples of each question) in one batch."""
    _check_mode(mode)
    stats = stats if stats is not None else GradingStats()
    normal = prm800k.normal_forms if mode == "prm800k" else normalize_answer
    forms = [[normal(answer) for answer in answers] for answers in groups]
    distinct = [list(dict.fromkeys(form for form in group if form is not None)) for group in forms]
    candidates = [(later, earlier) for group in distinct for i, later in enumerate(group) for earlier in group[:i]]
    if mode == "prm800k":
        verdicts = [prm800k.forms_equal(a, b) for a, b in candidates]
        stats.pairs += len(candidates)
        stats.distinct += len(candidates)
        stats.in_process += len(candidates)
    else:
        verdicts = _grade_normalized(candidates, timeout, workers, False, stats)
    equivalent = dict(zip(candidates, verdicts))
    clustered = []
    for group, unique in zip(forms, distinct):
        representatives: list = []
        cluster_of = {}
        for form in unique:
            match = next((i for i, rep in enumerate(representatives) if equivalent[(form, rep)]), None)
            cluster_of[form] = len(representatives) if match is None else match
            if match is None:
                representatives.append(form)
        clustered.append([-1 if form is None else cluster_of[form] for form in group])
    return clustered


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"config: field 'grading.mode': {mode!r} is not one of {list(MODES)}")


def _grade_normalized(
    pairs: Sequence[tuple[str | None, str | None]],
    timeout: float,
    workers: int | None,
    progress: bool,
    stats: GradingStats,
) -> list[bool]:
    """Verdicts for normalised pairs: each distinct pair once, in-process where decidable, the
    rest in parallel on the worker pool."""
    unique = list(dict.fromkeys(pairs))
    stats.pairs += len(pairs)
    stats.distinct += len(unique)
    verdicts: dict = {}
    slow = []
    for pair in unique:
        known = _verdict_cache.get(pair)
        if known is not None:
            verdicts[pair] = known
            stats.cached += 1
            continue
        decided = _decide_in_process(*pair)
        if decided is None:
            slow.append(pair)
        else:
            verdicts[pair] = decided
            stats.in_process += 1
    if slow:
        pool = grading_workers.shared_pool(workers)
        stats.symbolic += len(slow)
        bar = tqdm(total=len(slow), disable=not progress, unit="pair", desc="symbolic checks", mininterval=2)
        with ThreadPoolExecutor(max_workers=min(pool.size, len(slow))) as threads:
            for pair, (verdict, timed_out, retried) in zip(
                slow, threads.map(lambda p: _check(pool, *p, timeout), slow)
            ):
                verdicts[pair] = verdict
                stats.timeouts += timed_out
                stats.retries += retried
                if not timed_out:
                    _remember(pair, verdict)
                bar.update(1)
        bar.close()
    return [verdicts[pair] for pair in pairs]


def _check(pool, pred: str, gold: str, timeout: float) -> tuple[bool, bool, bool]:
    """(verdict, timed out, retried) of one symbolic check. A timeout is a genuine "not shown
    equivalent" (False); a worker that dies, breaks or cannot start gives no verdict: the check is
    repeated once on a fresh worker, then GradingError."""
    failure = None
    for attempt in range(2):
        worker = pool.acquire()
        try:
            return worker.check(pred, gold, timeout), False, attempt > 0
        except grading_workers.CheckTimeout:
            log.warning(
                "symbolic check timed out after %.1fs (counted as not equivalent): %.80r vs %.80r", timeout, pred, gold
            )
            return False, True, attempt > 0
        except grading_workers.WorkerFailure as error:
            failure = error
        finally:
            pool.release(worker)
    raise GradingError(f"no verdict for {pred!r} vs {gold!r}: the grading worker failed twice ({failure})")


def _remember(pair: tuple[str, str], verdict: bool) -> None:
    if len(_verdict_cache) >= _CACHE_LIMIT:
        _verdict_cache.clear()
    _verdict_cache[pair] = verdict


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
    if _item_count(pred) != _item_count(gold):
        # A tuple, interval or list never equals a single value or one of another length (the
        # symbolic tier would compare "-[0,1)" with an endpoint).
        return False
    return None


def _item_count(form: str) -> int:
    """Top-level comma-separated items of a normal form, inside one pair of brackets (a leading
    sign included: "-[0,1)" is an interval) or bare ("1,2"); 1 for a single value."""
    body = form.lstrip("+-")
    if len(body) >= 2 and body[0] in "([" and body[-1] in ")]" and _closes_at_end(body):
        body = body[1:-1]
    elif body.startswith(r"\{") and body.endswith(r"\}"):
        body = body[2:-2]
    depth, items = 0, 1
    for char in body:
        depth += (char in "([{") - (char in ")]}")
        items += char == "," and depth == 0
    return items


def _closes_at_end(text: str) -> bool:
    """Whether the bracket opening `text` closes at its last character (not "(1)+(2)")."""
    depth = 0
    for index, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0:
            return index == len(text) - 1
    return False


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


def _grade_prm800k(pairs: Sequence[tuple[str | None, str | None]], stats: GradingStats) -> list[bool]:
    """The authors' grading mode: string normal forms only, in-process (``easy2hard.prm800k``)."""
    unique = {pair: prm800k.is_equivalent(*pair) for pair in dict.fromkeys(pairs)}
    stats.pairs += len(pairs)
    stats.distinct += len(unique)
    stats.in_process += len(unique)
    return [unique[pair] for pair in pairs]


# ---------------------------------------------------------------------------------------------
# Worker side (runs in easy2hard.grading_workers processes only)


def preload_symbolic() -> None:
    """Import what the symbolic checks need, so that a worker's first check is as fast as the rest."""
    import math_verify  # noqa: F401
    import sympy  # noqa: F401
    from sympy.parsing import sympy_parser  # noqa: F401

    symbolic_equivalent("1", "1")


def symbolic_equivalent(pred: str, gold: str) -> bool:
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
    text = re.sub(r"[A-Za-z]+", lambda m: m[0] if m[0] in ("sqrt", "pi", "oo") else " ".join(m[0]), text)
    symbols = {letter: sympy.Symbol(letter) for letter in string.ascii_letters}
    transformations = standard_transformations + (implicit_multiplication_application,)
    return parse_expr(text, local_dict=symbols, transformations=transformations)
