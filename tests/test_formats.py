"""The solution format: prompt/solution layout, answer extraction, reference-solution step splitting.

All hand-written examples below are invented MATH-like text; the real MATH500 file is only read
from its path (``math_dir`` fixture) and is skipped when absent.
"""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easy2hard import synthetic
from easy2hard.formats import (
    ANSWER_MARKER,
    extract_answer,
    find_boxed,
    format_prompt,
    format_solution,
    last_boxed,
    normalize_step,
    parse_solution,
    split_reference_solution,
)


def unescaped_dollars(text: str) -> int:
    """Number of `$` not written as `\\$` (a `$$` counts twice, so parity is that of single `$`).

    A dollar after an even run of backslashes (e.g. the line break `\\\\`) is not escaped."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*\$", text))


def assert_clean_steps(steps: list[str]) -> None:
    assert steps, "at least one step"
    for step in steps:
        assert step, "empty step"
        assert step == step.strip(), f"step not stripped: {step!r}"
        assert "\n\n" not in step, f"blank line inside a step: {step!r}"


# --- format_prompt / format_solution -----------------------------------------------------------


def test_format_prompt_exact():
    assert format_prompt("What is $1+1$?") == "# Question\n\nWhat is $1+1$?\n\n# Solution\n\n"


def test_format_prompt_strips_the_problem():
    assert format_prompt("\n  Find $x$.  \n\n") == "# Question\n\nFind $x$.\n\n# Solution\n\n"


def test_format_solution_exact():
    text = format_solution(["First we add.", "Then we divide."], "7")
    assert text == "First we add.\n\nThen we divide.\n\n# Answer\n\n7"
    assert text.endswith(ANSWER_MARKER + "7")


def test_format_solution_strips_steps_and_answer():
    assert format_solution(["  a  ", "\nb\n"], "  \\frac{1}{2} \n") == "a\n\nb\n\n# Answer\n\n\\frac{1}{2}"


@pytest.mark.parametrize(
    "step, expected",
    [
        ("line one\n\nline two", "line one\nline two"),
        ("line one\n \t \nline two", "line one\nline two"),
        ("a\n\n\n\nb\n\nc", "a\nb\nc"),
        ("single\nnewline kept", "single\nnewline kept"),
        ("  padded  ", "padded"),
    ],
)
def test_steps_with_blank_lines_are_normalised(step, expected):
    assert normalize_step(step) == expected
    text = format_solution([step, "next"], "1")
    assert text == f"{expected}\n\nnext\n\n# Answer\n\n1"
    assert parse_solution(text) == ([expected, "next"], "1")


@pytest.mark.parametrize("steps", [[], [""], ["ok", ""], ["ok", "   \n\n  "]])
def test_empty_steps_raise(steps):
    with pytest.raises(ValueError):
        format_solution(steps, "1")


# --- parse_solution / extract_answer ------------------------------------------------------------


def test_parse_solution_answer_section():
    assert parse_solution("a\n\nb\n\n# Answer\n\n12") == (["a", "b"], "12")


def test_parse_solution_without_answer_section():
    assert parse_solution("a\n\nb\n\nc") == (["a", "b", "c"], None)


def test_parse_solution_answer_followed_by_text_after_blank_line():
    steps, answer = parse_solution("a\n\n# Answer\n\n12\n\nI hope this helps.\n\n# Question")
    assert steps == ["a"]
    assert answer == "12"


def test_parse_solution_empty_answer_section():
    assert parse_solution("a\n\n# Answer\n\n") == (["a"], None)


def test_extract_answer_prefers_answer_section_over_boxed():
    assert extract_answer("so $\\boxed{3}$\n\n# Answer\n\n4") == "4"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Thus $x = \\boxed{5}$.", "5"),
        ("It is $\\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
        ("It is $\\boxed{\\{1, 2\\}}$ or so.", "\\{1, 2\\}"),
        ("Nested: $\\boxed{a^{b^{c}}}$", "a^{b^{c}}"),
        ("Old style: $\\fbox{9}$", "9"),
        ("With a space: $\\boxed {10}$", "10"),
        ("First $\\boxed{1}$, last $\\fbox{2}$", "2"),
        ("Padded $\\boxed{  3  }$", "3"),
        ("So $\\boxed{6}$.\n\n# Answer\n\n  ", "6"),  # empty answer section: boxed fallback
    ],
)
def test_extract_answer_boxed_fallback(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["No answer here.", "Unbalanced $\\boxed{3$ braces", "", "\\boxed"])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_extract_answer_of_none_is_none():
    assert extract_answer(None) is None


def test_find_boxed_spans():
    text = "a \\boxed{x{y}} b \\fbox{z}"
    spans = find_boxed(text)
    assert [content for _, _, content in spans] == ["x{y}", "z"]
    assert [text[start:end] for start, end, _ in spans] == ["\\boxed{x{y}}", "\\fbox{z}"]
    assert last_boxed("nothing") is None


def test_round_trip_hand_case():
    steps = ["We note that $2 + 2 = 4$.", "Therefore the total is $4 \\cdot 3 = 12$."]
    assert parse_solution(format_solution(steps, "12")) == (steps, "12")
    assert extract_answer(format_solution(steps, "12")) == "12"


_answers = st.text(min_size=1, max_size=30).filter(
    lambda a: a.strip() and "\n\n" not in a.strip() and "# Answer" not in a
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=6), _answers)
def test_round_trip_property(steps, answer):
    normalised = [normalize_step(step) for step in steps]
    if not all(normalised):
        with pytest.raises(ValueError):
            format_solution(steps, answer)
        return
    text = format_solution(steps, answer)
    assert parse_solution(text) == (normalised, answer.strip())
    assert extract_answer(text) == answer.strip()


# --- split_reference_solution: hand-written MATH-like examples ----------------------------------

S1 = "We begin by writing the perimeter of the rectangle as a sum."  # 59 chars
S2 = "Then we solve the resulting linear equation for the width."  # 58 chars


def test_split_plain_sentences():
    assert split_reference_solution(f"{S1} {S2}") == [S1, S2]


def test_split_question_and_exclamation_marks():
    text = "Is the product of these two numbers always even? Yes! It is even because one factor is even."
    assert split_reference_solution(text, min_step_chars=0) == [
        "Is the product of these two numbers always even?",
        "Yes!",
        "It is even because one factor is even.",
    ]


def test_split_cuts_before_digit_dollar_and_display_math():
    text = "It is 5. 7 is odd. $x$ is odd. \\[y = 2.\\] Also fine. \\(z\\) too."
    assert split_reference_solution(text, min_step_chars=0) == [
        "It is 5.",
        "7 is odd.",
        "$x$ is odd.",
        "\\[y = 2.\\] Also fine.",
        "\\(z\\) too.",
    ]


def test_no_cut_before_lowercase():
    text = "We use the value of a. b is the other unknown quantity here."
    assert split_reference_solution(text, min_step_chars=0) == [text]


def test_no_cut_inside_inline_math():
    text = "We know that $x = 2.5. Y = 3$ holds for the given pair of values here. " + S2
    assert split_reference_solution(text) == [
        "We know that $x = 2.5. Y = 3$ holds for the given pair of values here.",
        S2,
    ]


@pytest.mark.parametrize(
    "math",
    [
        "$$a = 1. B = 2.$$",
        "\\(a = 1. B = 2.\\)",
        "\\[a = 1. B = 2.\\]",
        "\\begin{align*}\na &= 1. B \\\\\nc &= 2. D\n\\end{align*}",
    ],
)
def test_no_cut_inside_display_math_or_environments(math):
    text = f"Consider {math} holds. Then we finish."
    steps = split_reference_solution(text, min_step_chars=0)
    assert steps == [f"Consider {math} holds.", "Then we finish."]


def test_environment_with_blank_line_is_not_a_paragraph_break():
    text = (
        "We expand both sides as follows and compare the coefficients:\n"
        "\\begin{align*}\n(a+b)^2 &= a^2 + 2ab + b^2. \\\\\n\nX &= 1.\n\\end{align*}\n\n" + S2
    )
    steps = split_reference_solution(text)
    assert len(steps) == 2
    assert steps[0].startswith("We expand") and steps[0].endswith("\\end{align*}")
    assert "X &= 1." in steps[0]
    assert steps[1] == S2
    assert_clean_steps(steps)


def test_decimals_are_not_cut():
    text = "The rope is 3.5 meters long after the first cut is made. It then loses 0.25 meters more."
    assert split_reference_solution(text, min_step_chars=0) == [
        "The rope is 3.5 meters long after the first cut is made.",
        "It then loses 0.25 meters more.",
    ]


@pytest.mark.parametrize("abbreviation", ["e.g.", "i.e.", "etc.", "cf.", "Dr."])
def test_abbreviations_are_not_cut(abbreviation):
    text = f"Use a classical identity, {abbreviation} The Binomial Theorem applies here. Next we expand."
    assert split_reference_solution(text, min_step_chars=0) == [
        f"Use a classical identity, {abbreviation} The Binomial Theorem applies here.",
        "Next we expand.",
    ]


def test_escaped_dollar_is_not_math():
    text = "The pen costs \\$3.50 at the store. Then the total for two pens is \\$7.00 in all."
    assert split_reference_solution(text, min_step_chars=0) == [
        "The pen costs \\$3.50 at the store.",
        "Then the total for two pens is \\$7.00 in all.",
    ]


def test_paragraphs_are_boundaries_even_without_a_period():
    text = "first paragraph without a final period\n\nsecond paragraph in lower case"
    assert split_reference_solution(text, min_step_chars=0) == [
        "first paragraph without a final period",
        "second paragraph in lower case",
    ]


def test_asy_block_with_blank_lines_and_periods():
    asy = '[asy]\ndraw((0,0)--(1,0)--(1,1)--cycle);\n\nlabel("A. B", (0,0), SW);\n[/asy]'
    text = f"{S1}\n\n{asy}\n\n{S2}"
    steps = split_reference_solution(text)
    assert steps == [S1, asy.replace("\n\n", "\n"), S2]
    assert_clean_steps(steps)


def test_boxed_is_removed():
    steps = split_reference_solution("Adding the two numbers gives $x = \\boxed{42}$.")
    assert steps == ["Adding the two numbers gives $x = 42$."]
    nested = split_reference_solution("So the ratio we wanted is $\\boxed{\\frac{3}{4}}$ in the end.")
    assert nested == ["So the ratio we wanted is $\\frac{3}{4}$ in the end."]
    assert split_reference_solution("The total is $\\fbox{7}$ dollars, counted twice.") == [
        "The total is $7$ dollars, counted twice."
    ]


def test_short_sentences_merge_into_the_next_step():
    text = "So $x=2$. Then $y=3$. Adding the two values together gives the sum we want."
    assert split_reference_solution(text, min_step_chars=40) == [
        "So $x=2$. Then $y=3$. Adding the two values together gives the sum we want."
    ]
    assert split_reference_solution(text, min_step_chars=10) == [
        "So $x=2$. Then $y=3$.",
        "Adding the two values together gives the sum we want.",
    ]
    assert split_reference_solution(text, min_step_chars=0) == [
        "So $x=2$.",
        "Then $y=3$.",
        "Adding the two values together gives the sum we want.",
    ]


def test_short_last_sentence_merges_into_the_previous_step():
    assert split_reference_solution(f"{S1} {S2} Done.") == [S1, f"{S2} Done."]


def test_whole_solution_shorter_than_min_step_chars_is_one_step():
    assert split_reference_solution("It is 4. Done.", min_step_chars=40) == ["It is 4. Done."]


def test_merging_across_paragraphs():
    text = "Let $n = 3$.\n\nThen the triangle has three vertices and three edges in total."
    assert split_reference_solution(text) == [
        "Let $n = 3$. Then the triangle has three vertices and three edges in total."
    ]


def test_colon_sentence_is_kept_with_what_it_introduces():
    text = "Substituting the value into the original equation gives:\n\n$$3x + 2 = 11.$$\n\n" + S2
    assert split_reference_solution(text, min_step_chars=0) == [
        "Substituting the value into the original equation gives: $$3x + 2 = 11.$$",
        S2,
    ]


def test_trailing_colon_sentence_alone_is_a_step():
    assert split_reference_solution("We summarise the whole argument as follows:", min_step_chars=0) == [
        "We summarise the whole argument as follows:"
    ]


def test_min_step_chars_lower_bound_on_hand_cases():
    text = " ".join(f"Sentence number {i} is here." for i in range(12))
    for minimum in (0, 20, 40, 60, 100):
        steps = split_reference_solution(text, minimum)
        assert len(steps) > 1
        assert all(len(step) >= minimum for step in steps)
        assert " ".join(steps) == text


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", "\\boxed{}"])
def test_nothing_to_split_gives_no_steps(text):
    assert split_reference_solution(text) == []


_latexish = st.text(alphabet=list("aB1 .:?!$\n\\[]()e{}"), max_size=150)


@settings(max_examples=300, deadline=None)
@given(_latexish, st.integers(0, 60))
def test_split_never_loses_text_and_never_gives_blank_steps(text, minimum):
    steps = split_reference_solution(text, minimum)
    for step in steps:
        assert step and step == step.strip() and "\n\n" not in step
    without_boxes = text
    for start, end, content in reversed(find_boxed(text)):
        without_boxes = without_boxes[:start] + content + without_boxes[end:]
    assert re.sub(r"\s", "", "".join(steps)) == re.sub(r"\s", "", without_boxes)


def test_line_break_before_inline_math_is_not_an_escaped_dollar():
    text = "In the table we have a row \\\\$x = 1. Y = 2$ that we read off. Then we continue."
    steps = split_reference_solution(text, min_step_chars=0)
    assert all(unescaped_dollars(step) % 2 == 0 for step in steps), steps


# --- real MATH500 --------------------------------------------------------------------------------


def _read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_math500_solutions_split_cleanly(math_dir):
    rows = _read_rows(math_dir / "test.jsonl")
    assert len(rows) == 500
    problems = []
    for row in rows:
        solution = row["solution"]
        steps = split_reference_solution(solution)
        where = row["unique_id"]
        if not steps or any(not step or "\n\n" in step for step in steps):
            problems.append(f"{where}: empty step or blank line in a step")
            continue
        without_boxes = solution
        for start, end, content in reversed(find_boxed(solution)):
            without_boxes = without_boxes[:start] + content + without_boxes[end:]
        if sum(step.count("$") for step in steps) != without_boxes.count("$"):
            problems.append(f"{where}: number of '$' changed")
        odd = [step for step in steps if unescaped_dollars(step) % 2]
        if odd:
            problems.append(f"{where}: math cut mid-way in {odd[0][:80]!r}")
        if re.sub(r"\s", "", "".join(steps)) != re.sub(r"\s", "", without_boxes):
            problems.append(f"{where}: text lost or changed")
        if extract_answer(format_solution(steps, row["answer"])) != row["answer"]:
            problems.append(f"{where}: formatted answer does not round-trip")
        if "\\boxed" in " ".join(steps) or "\\fbox" in " ".join(steps):
            problems.append(f"{where}: box left in a step")
    assert not problems, problems[:10]


def test_math500_answer_is_last_boxed(math_dir):
    rows = _read_rows(math_dir / "test.jsonl")
    mismatched = [row["unique_id"] for row in rows if extract_answer(row["solution"]) != row["answer"]]
    assert not mismatched


# --- synthetic data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, value, count",
    [
        ([2, "+", 3, "*", 4], 14, 2),
        ([2, "*", 3, "+", 4], 10, 2),
        ([8, "-", 3, "-", 2], 3, 2),  # left to right, not 8 - (3 - 2)
        ([9, "-", 2, "+", 4], 11, 2),
        ([2, "*", 3, "+", 4, "*", 5], 26, 3),
        ([1, "-", 9, "*", 2], -17, 2),
        ([6, "*", 2, "*", 3], 36, 2),
        ([5, "+", 4], 9, 1),
        ([7], 7, 0),
    ],
)
def test_solve_steps_precedence(tokens, value, count):
    sentences, result = synthetic.solve_steps(tokens)
    assert result == value
    assert len(sentences) == count
    if count:
        assert f"\\boxed{{{value}}}" in sentences[-1]
        assert all("\\boxed" not in sentence for sentence in sentences[:-1])


def test_solve_steps_sentences():
    sentences, _ = synthetic.solve_steps([2, "+", 3, "*", 4])
    assert sentences == [
        "We compute $3 \\times 4 = 12$, so the expression becomes $2 + 12$.",
        "Finally, we compute $2 + 12 = 14$, so the answer is $\\boxed{14}$.",
    ]


def _python_value(problem: str) -> int:
    match = re.fullmatch(r"Compute \$(.*)\$\.", problem)
    assert match, problem
    expression = match.group(1).replace("\\times", "*")
    assert re.fullmatch(r"[0-9+\-* ]+", expression), expression
    return eval(expression)  # digits and + - * only (checked above)


def test_synthetic_rows_split_into_level_steps_and_answer_matches():
    train, test = synthetic.generate_splits(400, 100, seed=3)
    for row in train + test:
        steps = split_reference_solution(row["solution"])
        assert len(steps) == row["level"], (row["solution"], steps)
        assert_clean_steps(steps)
        assert row["answer"] == str(_python_value(row["problem"]))
        assert extract_answer(row["solution"]) == row["answer"]
        assert extract_answer(format_solution(steps, row["answer"])) == row["answer"]


# --- the in-context baseline's prompt -----------------------------------------------------------


def test_icl_exemplars_prompt_and_stop():
    from easy2hard.formats import ICL_STOP, choose_exemplars, cut_at_stop, format_exemplars, format_prompt

    rows = [
        {
            "unique_id": f"e{i}",
            "problem": f"What is {i} + {i}?",
            "steps": [f"{i} + {i} = {2 * i}."],
            "answer": str(2 * i),
        }
        for i in range(10)
    ]
    chosen = choose_exemplars(rows, 3, seed=0)
    assert len({row["unique_id"] for row in chosen}) == 3
    assert chosen == choose_exemplars(list(reversed(rows)), 3, seed=0)  # the order of the file does not matter
    assert chosen != choose_exemplars(rows, 3, seed=1)
    with pytest.raises(ValueError, match="icl.k = 11"):
        choose_exemplars(rows, 11, seed=0)
    context = format_exemplars(chosen[:2])
    first, second = chosen[:2]
    assert context == (
        f"# Question\n\n{first['problem']}\n\n# Solution\n\n{first['steps'][0]}\n\n# Answer\n\n{first['answer']}"
        f"\n\n\n# Question\n\n{second['problem']}\n\n# Solution\n\n{second['steps'][0]}\n\n# Answer\n\n"
        f"{second['answer']}\n\n\n"
    )
    # The prompt a base model continues: exemplars, then the question in the same format.
    assert (context + format_prompt("What is 7 + 7?")).endswith("# Question\n\nWhat is 7 + 7?\n\n# Solution\n\n")
    # A base model goes on with the next question after its answer: the completion ends there.
    assert cut_at_stop("7 + 7 = 14.\n\n# Answer\n\n14\n\n# Question\n\nWhat is") == (
        "7 + 7 = 14.\n\n# Answer\n\n14",
        True,
    )
    assert cut_at_stop("7 + 7 = 14.") == ("7 + 7 = 14.", False)
    assert ICL_STOP == "\n\n# Question"
