"""The synthetic task's step labeller: the offline stand-in for PRM800K's human step labels."""

import random

import pytest

from easy2hard import formats, synthetic

EASY = [1, 2, 3]


def _reference(level, subject="Mixed Operations", seed=0):
    problem, solution, answer = synthetic.make_problem(level, subject, random.Random(seed))
    return problem, formats.split_reference_solution(solution), answer


def test_the_reference_solution_is_correct_everywhere():
    for seed in range(30):
        for level in EASY:
            problem, steps, answer = _reference(level, seed=seed)
            assert len(steps) == level
            assert synthetic.label_steps(problem, level, steps, answer, EASY) == [1.0] * (level + 1)


def test_labels_stop_at_the_first_wrong_step():
    problem = "Compute $4 \\times 3 - 8 \\times 2$."
    steps = [
        "We compute $4 \\times 3 = 12$, so the expression becomes $12 - 8 \\times 2$.",
        "We compute $8 \\times 2 = 16$, so the expression becomes $12 - 16$.",
        "Finally, we compute $12 - 16 = -4$, so the answer is $-4$.",
    ]
    assert synthetic.label_steps(problem, 3, steps, "-4", EASY) == [1.0, 1.0, 1.0, 1.0]
    wrong_value = [steps[0], steps[1].replace("= 16", "= 15"), steps[2]]
    assert synthetic.label_steps(problem, 3, wrong_value, "-4", EASY) == [1.0, 0.0, None, None]
    wrong_copy = [steps[0].replace("$12 - 8", "$12 + 8"), *steps[1:]]
    assert synthetic.label_steps(problem, 3, wrong_copy, "-4", EASY) == [0.0, None, None, None]
    wrong_order = ["We compute $3 - 8 = -5$, so the expression becomes $4 \\times -5 \\times 2$.", *steps[1:]]
    assert synthetic.label_steps(problem, 3, wrong_order, "-4", EASY)[0] == 0.0
    # Right steps, then a wrong answer section; stopping early; a step too many; no answer.
    assert synthetic.label_steps(problem, 3, steps, "4", EASY) == [1.0, 1.0, 1.0, 0.0]
    assert synthetic.label_steps(problem, 3, steps[:2], "-4", EASY) == [1.0, 1.0, 0.0]
    assert synthetic.label_steps(problem, 3, steps + [steps[2]], "-4", EASY) == [1.0, 1.0, 1.0, 0.0, None]
    assert synthetic.label_steps(problem, 3, steps, None, EASY) == [1.0, 1.0, 1.0]


def test_the_labeller_refuses_hard_problems():
    problem, steps, answer = _reference(4)
    with pytest.raises(ValueError, match="easy problems only; got level 4"):
        synthetic.label_steps(problem, 4, steps, answer, EASY)
    # An oracle (every level supervised) may label it.
    assert synthetic.label_steps(problem, 4, steps, answer, [1, 2, 3, 4, 5]) == [1.0] * 5


def test_a_problem_that_is_not_synthetic_is_an_error():
    with pytest.raises(ValueError, match="not a synthetic arithmetic problem"):
        synthetic.label_steps("What is $x$ if $2x = 4$?", 1, ["x = 2."], "2", EASY)


def test_labeller_examples_label_easy_samples_only():
    from easy2hard.evaluator_data import labeller_examples

    easy_problem, easy_steps, easy_answer = _reference(2, seed=1)
    hard_problem, hard_steps, hard_answer = _reference(4, seed=1)
    right = formats.format_solution(easy_steps, easy_answer)
    wrong = formats.format_solution([easy_steps[0].replace("=", "= 1", 1), easy_steps[1]], easy_answer)
    samples = [
        {"unique_id": "e", "completion": right},
        {"unique_id": "e", "completion": right + " "},  # a duplicate
        {"unique_id": "e", "completion": wrong},
        {"unique_id": "h", "completion": formats.format_solution(hard_steps, hard_answer)},
    ]
    supervised = {"e": {"problem": easy_problem, "level": 2}}
    examples, counts = labeller_examples(samples, supervised, EASY)
    assert [example["labels"] for example in examples] == [[1.0, 1.0, 1.0], [0.0, None, None]]
    assert counts["solutions"] == 2 and counts["questions"] == 1
    # A hard question passed as supervised is refused, not labelled.
    with pytest.raises(ValueError, match="easy problems only"):
        labeller_examples(samples, {**supervised, "h": {"problem": hard_problem, "level": 4}}, EASY)


# --- the chain style (the offline default) ----------------------------------------------------


def test_chain_problems_parse_and_their_reference_steps_are_correct():
    for seed in range(20):
        for level in synthetic.LEVELS:
            for subject in synthetic.SUBJECT_OPERATORS:
                problem, steps, answer = synthetic.make_chain_problem(level, subject, random.Random(seed), max_value=20)
                start, operations = synthetic.parse_chain(problem)
                assert len(operations) == len(steps) == level
                assert synthetic.chain_steps(start, operations) == (steps, int(answer))
                assert synthetic.label_steps(problem, level, steps, answer, synthetic.LEVELS) == [1.0] * (level + 1)
                values = [int(step.split(" = ")[1].rstrip(".")) for step in steps]
                assert all(0 <= value <= 20 for value in values)


def test_chain_labels_check_each_step_against_the_previous_value_and_the_question():
    problem = "Start with 3, then apply + 4, × 2, - 5 in this order. What is the result?"
    assert synthetic.parse_chain(problem) == (3, [("+", 4), ("*", 2), ("-", 5)])
    steps = ["3 + 4 = 7.", "7 × 2 = 14.", "14 - 5 = 9."]
    assert synthetic.label_steps(problem, 3, steps, "9", EASY) == [1.0, 1.0, 1.0, 1.0]
    assert synthetic.label_steps(problem, 3, [" 3 +  4 = 7 ", *steps[1:]], "9", EASY) == [1.0] * 4  # spacing, no period
    assert synthetic.label_steps(problem, 3, ["3 + 4 = 8.", *steps[1:]], "9", EASY) == [0.0, None, None, None]
    assert synthetic.label_steps(problem, 3, [steps[0], "7 - 5 = 2.", "2 × 2 = 4."], "4", EASY) == [
        1.0,
        0.0,
        None,
        None,
    ]
    assert synthetic.label_steps(problem, 3, [steps[0], "8 × 2 = 16.", steps[2]], "9", EASY)[1] == 0.0  # wrong carry
    assert synthetic.label_steps(problem, 3, steps[:2], "14", EASY) == [1.0, 1.0, 0.0]  # stopped early
    with pytest.raises(ValueError, match="easy problems only; got level 4"):
        synthetic.label_steps(problem, 4, steps, "9", EASY)


def test_chain_rows_carry_their_steps_through_the_split():
    from easy2hard import data

    train, test = synthetic.generate_splits([20, 20, 20, 10, 10], 20, 0, max_value=20, style="chain")
    split = data.split_problems(train, test, EASY, 10, 0)
    for row in split.train_easy:
        start, operations = synthetic.parse_chain(row["problem"])
        assert row["steps"] == synthetic.chain_steps(start, operations)[0]
    assert all("steps" not in row for row in split.train_hard + split.valid + split.test)
    with pytest.raises(ValueError, match="unknown synthetic style"):
        synthetic.generate(5, 0, "train", style="prose")


# --- the plus_minus style: every level has chains of 3-5 operations ----------------------------


def test_plus_minus_level_counts_the_additions_and_subtractions_of_a_3_to_5_step_chain():
    lengths = {level: set() for level in synthetic.LEVELS}
    for seed in range(30):
        for level in synthetic.LEVELS:
            problem, steps, answer = synthetic.make_plus_minus_problem(level, random.Random(seed), max_value=20)
            start, operations = synthetic.parse_chain(problem)
            assert sum(operator in "+-" for operator, _ in operations) == level
            assert 3 <= len(operations) <= 5
            lengths[level].add(len(operations))
            assert synthetic.chain_steps(start, operations) == (steps, int(answer))
            assert synthetic.label_steps(problem, level, steps, answer, synthetic.LEVELS) == [1.0] * (len(steps) + 1)
            values = [int(step.split(" = ")[1].rstrip(".")) for step in steps]
            assert all(0 <= value <= 20 for value in values)
    # easy levels reach the hard levels' lengths: a hard problem is never longer than every easy one
    assert lengths[1] == lengths[2] == lengths[3] == {3, 4, 5} and lengths[4] == {4, 5} and lengths[5] == {5}


def test_plus_minus_rows_have_one_subject_and_carry_their_steps():
    rows = synthetic.generate([4, 4, 4, 4, 4], 0, "train", max_value=20, style="plus_minus")
    assert {row["subject"] for row in rows} == {synthetic.PLUS_MINUS_SUBJECT}
    assert [row["level"] for row in rows] == [level for level in synthetic.LEVELS for _ in range(4)]
    assert all(row["solution"].startswith(row["steps"][0]) for row in rows)
    assert len(synthetic.generate(10, 0, "test", max_value=20, style="plus_minus")) == 10
