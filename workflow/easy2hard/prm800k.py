r"""The authors' grading mode (``grading.mode: prm800k``): string normal forms only.

The paper's numbers come from the PRM800K ``grade_answer`` as the authors' code runs it
(Edward-Sun/easy-to-hard, ``math_utils/grader.py``): the sympy comparison is switched off there,
so an answer is right only when one of two normal forms equals the gold answer's:

1. the Hendrycks MATH normal form (``math_normalize``): ``\text{}`` around the whole answer,
   ``\!``, ``\left``/``\right``, degrees, ``\$``, a unit after ``\text{ ``, ``\%``, ``.5`` -> ``0.5``,
   a short ``x =`` prefix, ``\sqrt3``, spaces, ``\frac12``, ``a/b`` -> ``\frac{a}{b}``, and the one
   special case ``0.5`` -> ``\frac{1}{2}``;
2. the PRM800K normal form (``_normalize``): ``\text{}``, ``$``/``%``, "and"/"or" lists, million /
   billion / trillion, unit words, ``^\circ``, ``,\!`` thousands, integral floats as integers,
   LaTeX read as plain text (``\frac{a}{b}`` -> ``a/b``, ``\sqrt`` -> ``sqrt``, ``\pi`` -> ``pi``),
   mixed numbers ``7 3/4`` -> ``7+3/4``, no spaces or braces, lower case, integers without
   thousands commas.

After two different normal forms the PRM800K grader compares tuple elements, and with sympy off
an element pair can only pass as two identical fraction strings, i.e. when the forms were already
equal: that step is therefore left out. Consequences: ``\frac{2}{4}`` is not ``\frac12`` (fractions
must be reduced), ``0.25`` is not ``\frac14``, ``10.0`` equals ``10`` (integers are exact), and,
through Hendrycks' special case, ``0.5`` *does* equal ``\frac12``.

Written from scratch from the behaviour described above; the LaTeX-to-text step is pylatexenc's,
as in PRM800K, so that step is the same by construction.
"""

from __future__ import annotations

import re
from functools import lru_cache

# -------------------------------------------------------------------------------- Hendrycks

_WHOLE_TEXT = re.compile(r"^\\text\{(?P<text>.+?)\}$", re.DOTALL)


def hendrycks_form(answer: str | None) -> str | None:
    """The Hendrycks MATH normal form (None for None)."""
    if answer is None:
        return None
    answer = answer.strip()
    whole = _WHOLE_TEXT.search(answer)
    if whole:
        answer = whole["text"].strip()
    try:
        return _hendrycks_strip(answer)
    except ValueError:  # a shape the normaliser gives up on: the text as it stands
        return answer


def _hendrycks_strip(text: str) -> str:
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "")
    if "\\text{ " in text:  # a unit on the right
        parts = text.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("several units")
        text = parts[0]
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5"
        text = sides[1]
    text = _brace_first_token(text, "\\sqrt", 1).replace(" ", "")
    text = _brace_first_token(text, "\\frac", 2)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _slash_to_frac(text)


def _brace_first_token(text: str, command: str, arguments: int) -> str:
    r"""``\sqrt3`` -> ``\sqrt{3}``, ``\frac12`` -> ``\frac{1}{2}``, ``\frac1{72}`` -> ``\frac{1}{72}``:
    one-character arguments right after the command get braces (as Hendrycks' normaliser)."""
    pieces = text.split(command)
    out = pieces[0]
    for piece in pieces[1:]:
        out += command
        if piece.startswith("{"):
            out += piece
            continue
        if arguments == 1:
            if not piece:
                raise ValueError("a command without an argument")
            out += "{" + piece[0] + "}" + piece[1:]
            continue
        if len(piece) < 2:
            raise ValueError("a fraction without two arguments")
        first, second = piece[0], piece[1]
        out += "{" + first + "}" + (second if second == "{" else "{" + second + "}") + piece[2:]
    return out


def _slash_to_frac(text: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when both sides are integers written plainly."""
    parts = text.split("/")
    try:
        numerator, denominator = (int(part) for part in parts)
    except ValueError:  # not two parts, or not integers
        return text
    return f"\\frac{{{numerator}}}{{{denominator}}}" if text == f"{numerator}/{denominator}" else text


# ---------------------------------------------------------------------------------- PRM800K

_UNITS = (
    "degree",
    "cm",
    "centimeter",
    "meter",
    "mile",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "foot",
    "feet",
    "inch",
    "yard",
)
_UNIT = re.compile("(?:" + "|".join(_UNITS) + r")(?:es)?(?:s)? *(?:\^[0-9]+)?")
_CIRC = re.compile(r"\^ *\\circ")
_MARKED_COMMA = re.compile(r",\\! *")
_MIXED = re.compile(r"([0-9]) +([0-9])")
_GROUPED_COMMA = re.compile(r"(\d),(\d\d\d)($|\D)")


def prm800k_form(answer: str | None) -> str | None:
    """The PRM800K normal form (None for None)."""
    if answer is None:
        return None
    text = answer
    whole = _WHOLE_TEXT.search(text)
    if whole:
        text = whole["text"]
    text = text.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    text = text.replace(" or ", " , ").replace(" and ", " , ")
    text = text.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    text = _CIRC.sub("", _UNIT.sub("", text))
    if text[:1] == "{" and text[-1:] == "}":
        text = text[1:-1]
    text = _MARKED_COMMA.sub("", text)
    if _is_integral_float(text):
        text = str(int(round(float(text))))
    if "\\" in text:
        text = latex_to_text(
            text.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
        )
    text = re.sub(r"- *", "-", text)
    text = _MIXED.sub(r"\1+\2", text)
    text = text.replace(" ", "").replace("{", "").replace("}", "").lower()
    integer = _as_integer(text)
    return text if integer is None else integer


def _is_integral_float(text: str) -> bool:
    try:
        value = float(text)
        return abs(value - int(round(value))) <= 1e-7
    except (ValueError, OverflowError):
        return False


def _as_integer(text: str) -> str | None:
    """``1,000`` / ``12.0`` -> ``1000`` / ``12``; None for anything that is not an integer."""
    stripped = text
    while True:
        changed = _GROUPED_COMMA.sub(r"\1\2\3", stripped)
        if changed == stripped:
            break
        stripped = changed
    if not _is_integral_float(stripped):
        return None
    try:
        return str(int(float(text.replace(",", ""))))
    except (ValueError, OverflowError):
        return None


# What PRM800K maps after pylatexenc's text rendering
_TEXT_SYMBOLS = str.maketrans(
    {"\u221a": "sqrt", "\u03c0": "pi", "\u221e": "inf", "\u222a": "U", "\u00b7": "*", "\u00d7": "*"}
)


def latex_to_text(latex: str) -> str:
    """LaTeX read as plain text by pylatexenc, as the PRM800K grader reads it (``\\frac{a}{b}`` ->
    ``a/b``, ``\\sqrt{x}`` -> ``sqrt(x)``, ``\\pi`` -> ``pi``); the input unchanged if it fails."""
    from pylatexenc.latex2text import LatexNodes2Text

    try:
        return LatexNodes2Text().latex_to_text(latex).translate(_TEXT_SYMBOLS).strip()
    except Exception:  # noqa: BLE001 - PRM800K keeps the expression when the conversion fails
        return latex


# ------------------------------------------------------------------------------------ verdict


@lru_cache(maxsize=1 << 16)
def normal_forms(answer: str | None) -> tuple[str, str] | None:
    """(Hendrycks form, PRM800K form) of an answer; None for None or an empty answer."""
    if answer is None or not answer.strip():
        return None
    return hendrycks_form(answer), prm800k_form(answer)


def forms_equal(pred: tuple[str, str] | None, gold: tuple[str, str] | None) -> bool:
    """Equivalent under the authors' grader: either normal form is the same string."""
    if pred is None or gold is None:
        return False
    return pred[0] == gold[0] or (bool(gold[1]) and pred[1] == gold[1])


def is_equivalent(pred: str | None, gold: str | None) -> bool:
    """Whether ``pred`` matches ``gold`` under the authors' grader (no sympy, no timeout)."""
    return forms_equal(normal_forms(pred), normal_forms(gold))
