"""The authors' solution format: prompt, steps, answer section; step splitting; answer extraction.

A formatted example is ``PROMPT + SOLUTION + EOS`` where

    PROMPT   = "# Question\\n\\n{problem}\\n\\n# Solution\\n\\n"
    SOLUTION = "{step 1}\\n\\n{step 2}...\\n\\n# Answer\\n\\n{answer}"

Steps never contain a blank line, so ``"\\n\\n"`` separates them unambiguously and the
newline that ends each step is where a process reward model reads its score.
"""

from __future__ import annotations

import random
import re

STEP_SEPARATOR = "\n\n"
ANSWER_HEADER = "# Answer"
PROMPT_TEMPLATE = "# Question\n\n{problem}\n\n# Solution\n\n"
ANSWER_MARKER = STEP_SEPARATOR + ANSWER_HEADER + STEP_SEPARATOR


def format_prompt(problem: str) -> str:
    return PROMPT_TEMPLATE.format(problem=problem.strip())


def format_solution(steps: list[str], answer: str) -> str:
    """Steps joined by blank lines, then the answer section (EOS is the tokenizer's business)."""
    clean = [normalize_step(step) for step in steps]
    if not clean or any(not step for step in clean):
        raise ValueError("a solution needs at least one non-empty step")
    return STEP_SEPARATOR.join(clean) + ANSWER_MARKER + answer.strip()


# The in-context baseline: k solved easy problems in the training format, then the question. A
# base model continues past its own answer with the next "# Question": the completion ends there.
EXEMPLAR_SEPARATOR = "\n\n\n"
ICL_STOP = STEP_SEPARATOR + "# Question"


def format_exemplars(exemplars: list[dict]) -> str:
    """The few-shot prefix: each exemplar's prompt and solution, separated by blank lines."""
    return "".join(
        format_prompt(e["problem"]) + format_solution(e["steps"], e["answer"]) + EXEMPLAR_SEPARATOR for e in exemplars
    )


def choose_exemplars(candidates: list[dict], k: int, seed: int) -> list[dict]:
    """k solved problems drawn with a seeded RNG from `candidates` (sorted by unique_id first, so
    the choice depends on the seed and the set only): the same exemplars for every question."""
    if k > len(candidates):
        raise ValueError(f"icl.k = {k} exemplars requested, only {len(candidates)} easy train problems")
    ordered = sorted(candidates, key=lambda row: row["unique_id"])
    return random.Random(seed).sample(ordered, k)


def cut_at_stop(text: str, stop: str = ICL_STOP) -> tuple[str, bool]:
    """(text before the first `stop`, whether it was found): a base model's answer ends there."""
    index = text.find(stop)
    return (text, False) if index < 0 else (text[:index].rstrip(), True)


def normalize_step(step: str) -> str:
    """A step is stripped and holds no blank line (that would read as a step boundary)."""
    return re.sub(r"\n\s*\n", "\n", step.strip())


def parse_solution(text: str) -> tuple[list[str], str | None]:
    """Split a generated solution into (steps, answer); answer is None without an answer section."""
    body, header, tail = text.rpartition(ANSWER_HEADER)
    if not header:
        body, tail = text, None
    steps = [step.strip() for step in body.split(STEP_SEPARATOR) if step.strip()]
    answer = None
    if tail is not None:
        answer = tail.strip().split(STEP_SEPARATOR)[0].strip() or None
    return steps, answer


# ---------------------------------------------------------------------------------------------
# Answer extraction


def find_boxed(text: str) -> list[tuple[int, int, str]]:
    r"""All ``\boxed{...}`` / ``\fbox{...}`` spans as (start, end, content), braces matched."""
    spans = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, index = 1, match.end()
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth == 0:
            spans.append((match.start(), index, text[match.end() : index - 1]))
    return spans


def last_boxed(text: str) -> str | None:
    spans = find_boxed(text)
    return spans[-1][2].strip() if spans else None


def extract_answer(text: str) -> str | None:
    r"""The final answer of a solution: the ``# Answer`` section, else the last ``\boxed{}``."""
    if text is None:
        return None
    _, answer = parse_solution(text)
    if answer is not None:
        return answer
    return last_boxed(text)


# ---------------------------------------------------------------------------------------------
# Reference solutions (MATH) -> steps
#
# Heuristic, documented in docs/formats.md: a MATH solution is cut into sentences at ". ", "! "
# or "? " outside math ($...$, $$...$$, \[...\], \(...\), \begin{..}..\end{..}, [asy]..[/asy])
# when the next sentence starts with a capital letter, a digit or math; paragraph breaks are
# always boundaries. Sentences shorter than `min_step_chars` are merged into the following one,
# and a sentence ending in ":" is kept with what it introduces. \boxed{x} becomes x.

_MATH_OPENERS = [
    ("$$", "$$"),
    ("\\[", "\\]"),
    ("\\(", "\\)"),
    ("[asy]", "[/asy]"),
    ("$", "$"),
]
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Mrs.", "Ms.", "Dr.", "St.", "No.")


def _math_spans(text: str) -> list[tuple[int, int]]:
    """Spans of text that are math (sentence boundaries inside them are ignored)."""
    spans, index = [], 0
    while index < len(text):
        if text.startswith("\\begin{", index):
            name_end = text.find("}", index)
            name = text[index + 7 : name_end]
            close = text.find("\\end{" + name + "}", name_end)
            end = len(text) if close < 0 else close + len(name) + 6
            spans.append((index, end))
            index = end
            continue
        if text.startswith("\\\\", index) or text.startswith("\\$", index):
            index += 2  # a line break "\\" or an escaped dollar "\$": neither opens math
            continue
        for opener, closer in _MATH_OPENERS:
            if text.startswith(opener, index):
                close = text.find(closer, index + len(opener))
                end = len(text) if close < 0 else close + len(closer)
                spans.append((index, end))
                index = end
                break
        else:
            index += 1
    return spans


def _sentence_cuts(paragraph: str) -> list[int]:
    spans = _math_spans(paragraph)
    in_math = bytearray(len(paragraph))
    for start, end in spans:
        in_math[start:end] = b"\x01" * (end - start)
    cuts = []
    for match in re.finditer(r"[.!?](?=\s+(?:[A-Z0-9$]|\\\[|\\\())", paragraph):
        position = match.start()
        if in_math[position]:
            continue
        head = paragraph[: position + 1]
        if head.endswith(_ABBREVIATIONS):
            continue
        cuts.append(match.end())
    return cuts


def split_reference_solution(solution: str, min_step_chars: int = 40) -> list[str]:
    """Cut a MATH reference solution into steps (see the heuristic above)."""
    without_boxes = solution
    for start, end, content in reversed(find_boxed(solution)):
        without_boxes = without_boxes[:start] + content + without_boxes[end:]
    sentences: list[str] = []
    for paragraph in _paragraphs(without_boxes):
        previous = 0
        for cut in _sentence_cuts(paragraph) + [len(paragraph)]:
            piece = paragraph[previous:cut].strip()
            if piece:
                sentences.append(piece)
            previous = cut
    steps: list[str] = []
    pending = ""
    for sentence in sentences:
        pending = f"{pending} {sentence}".strip() if pending else sentence
        if len(pending) >= min_step_chars and not pending.endswith(":"):
            steps.append(normalize_step(pending))
            pending = ""
    if pending:
        if steps and len(pending) < min_step_chars:
            steps[-1] = normalize_step(steps[-1] + " " + pending)
        else:
            steps.append(normalize_step(pending))
    return steps


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, never cutting inside a math span."""
    spans = _math_spans(text)
    paragraphs, previous = [], 0
    for match in re.finditer(r"\n\s*\n", text):
        if any(start <= match.start() < end for start, end in spans):
            continue
        paragraphs.append(text[previous : match.start()])
        previous = match.end()
    paragraphs.append(text[previous:])
    return [p.strip() for p in paragraphs if p.strip()]
