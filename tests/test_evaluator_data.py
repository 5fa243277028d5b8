"""Evaluator training data: ORM balancing, PRM800K step labels (on the real sample records),
Monte-Carlo step labels, the OPRM mixture -- and that no hard-level gold answer is ever used."""

import importlib.util
import json
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PRM800K_EXAMPLES_DIR, REPO_ROOT
from easy2hard import evaluator_data, formats, modeling, prm800k_data, sampling
from easy2hard.evaluator_data import balance_orm, orm_example, prm800k_examples
from easy2hard.io import DataError, read_jsonl, write_jsonl

SAMPLE_FILES = ("phase1_train.sample.jsonl", "phase1_test.sample.jsonl", "phase2.sample.jsonl")


def graded(unique_id: str, outcomes, start: int = 0, text: str = "solution") -> list[dict]:
    """Distinct graded samples of one question, one per outcome."""
    return [
        {
            "unique_id": unique_id,
            "sample_index": start + i,
            "completion": f"{text} {start + i}\n\n# Answer\n\n{i}",
            "correct": c,
        }
        for i, c in enumerate(outcomes)
    ]


def per_question(rows) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for row in rows:
        counts.setdefault(row["unique_id"], Counter())[bool(row["correct"])] += 1
    return counts


# --- balance_orm ---------------------------------------------------------------------------------


def test_one_positive_ten_negatives_keeps_one_and_three():
    kept, stats = balance_orm(graded("q", [True] + [False] * 10), max_ratio=3, seed=0)
    assert per_question(kept)["q"] == Counter({True: 1, False: 3})
    assert stats.downsampled == 7
    assert (stats.positives, stats.negatives, stats.questions_kept) == (1, 3, 1)


def test_ten_positives_two_negatives_keeps_six_and_two():
    kept, stats = balance_orm(graded("q", [True] * 10 + [False] * 2), max_ratio=3, seed=0)
    assert per_question(kept)["q"] == Counter({True: 6, False: 2})
    assert stats.downsampled == 4
    # The minority is kept whole.
    assert {r["sample_index"] for r in kept if not r["correct"]} == {10, 11}


def test_exact_three_to_one_is_untouched():
    rows = graded("a", [True] * 3 + [False]) + graded("b", [False] * 6 + [True] * 2)
    kept, stats = balance_orm(rows, max_ratio=3, seed=0)
    assert sorted((r["unique_id"], r["sample_index"]) for r in kept) == sorted(
        (r["unique_id"], r["sample_index"]) for r in rows
    )
    assert stats.downsampled == 0
    assert stats.questions_kept == 2


def test_single_class_questions_are_dropped_and_counted():
    rows = graded("all_right", [True] * 4) + graded("all_wrong", [False] * 5) + graded("mixed", [True, False])
    kept, stats = balance_orm(rows, max_ratio=3, seed=0)
    assert {r["unique_id"] for r in kept} == {"mixed"}
    assert stats.dropped_all_correct == 1
    assert stats.dropped_all_wrong == 1
    assert stats.questions_in == 3
    assert stats.questions_kept == 1


def test_duplicates_are_removed_before_balancing():
    # 4 copies of one wrong solution (two differ only in surrounding whitespace) and one right one:
    # without de-duplication 4 negatives would be down-sampled to 3, with it 1 + 1 remain.
    wrong = "We add.\n\n# Answer\n\n3"
    rows = [
        {"unique_id": "q", "sample_index": 0, "completion": wrong, "correct": False},
        {"unique_id": "q", "sample_index": 1, "completion": "  " + wrong + "\n", "correct": False},
        {"unique_id": "q", "sample_index": 2, "completion": wrong, "correct": False},
        {"unique_id": "q", "sample_index": 3, "completion": "\n" + wrong, "correct": False},
        {"unique_id": "q", "sample_index": 4, "completion": "We multiply.\n\n# Answer\n\n4", "correct": True},
    ]
    kept, stats = balance_orm(rows, max_ratio=3, seed=0)
    assert stats.duplicates_dropped == 3
    assert stats.downsampled == 0
    assert sorted(r["sample_index"] for r in kept) == [0, 4]  # the first copy is the one kept


def test_duplicates_can_empty_a_class():
    # Two identical right solutions and one wrong: 1:1 after de-duplication.
    rows = [
        {"unique_id": "q", "sample_index": 0, "completion": "A\n\n# Answer\n\n1", "correct": True},
        {"unique_id": "q", "sample_index": 1, "completion": "A\n\n# Answer\n\n1 ", "correct": True},
        {"unique_id": "q", "sample_index": 2, "completion": "B\n\n# Answer\n\n2", "correct": False},
    ]
    kept, stats = balance_orm(rows, max_ratio=3, seed=0)
    assert stats.duplicates_dropped == 1
    assert per_question(kept)["q"] == Counter({True: 1, False: 1})


def test_rows_without_correctness_are_ignored():
    hard = graded("hard", [None] * 5)
    rows = graded("easy", [True, False]) + hard + graded("easy", [None, None], start=10)
    kept, stats = balance_orm(rows, max_ratio=3, seed=0)
    assert {r["unique_id"] for r in kept} == {"easy"}
    assert all(r["correct"] is not None for r in kept)
    assert stats.samples_in == 2
    assert stats.questions_in == 1  # the hard question is not even counted


def test_down_sampling_is_seeded():
    rows = graded("q", [True] + [False] * 10)

    def chosen(seed):
        kept, _ = balance_orm(rows, max_ratio=3, seed=seed)
        return tuple(r["sample_index"] for r in kept)

    assert chosen(0) == chosen(0)
    assert chosen(7) == chosen(7)
    assert len({chosen(seed) for seed in range(20)}) > 1  # 120 possible choices; seeds differ
    # The input list is not reordered or mutated.
    assert [r["sample_index"] for r in rows] == list(range(11))


def test_kept_rows_are_input_rows_in_sample_order():
    rows = graded("q", [False] * 10 + [True] * 2)
    kept, _ = balance_orm(rows, max_ratio=3, seed=3)
    assert all(any(k is r for r in rows) for k in kept)
    indices = [r["sample_index"] for r in kept]
    assert indices == sorted(indices)


outcome_lists = st.lists(st.lists(st.booleans(), max_size=14), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(outcome_lists, st.lists(st.integers(0, 3), max_size=20), st.integers(0, 10**6))
def test_ratio_invariant_and_stats_add_up(questions, duplicate_counts, seed):
    rows = []
    for q, outcomes in enumerate(questions):
        rows += graded(f"q{q}", outcomes)
    # Some extra copies (identical up to whitespace) of existing rows, and rows without outcome.
    duplicates = []
    for row, copies in zip(rows, duplicate_counts):
        duplicates += [
            {**row, "completion": " " * c + row["completion"] + "\n" * c, "sample_index": 100 + c}
            for c in range(copies)
        ]
    hard = graded("hard", [None] * 3)
    kept, stats = balance_orm(rows + duplicates + hard, max_ratio=3, seed=seed)

    counts = per_question(kept)
    for unique_id, c in counts.items():
        assert c[True] > 0 and c[False] > 0
        assert 1 / 3 <= c[True] / c[False] <= 3
    expected_kept = set()
    dropped_samples = 0
    for q, outcomes in enumerate(questions):
        positives, negatives = sum(outcomes), len(outcomes) - sum(outcomes)
        if positives and negatives:
            expected_kept.add(f"q{q}")
            minority, majority = sorted([positives, negatives])
            assert sum(counts[f"q{q}"].values()) == minority + min(majority, 3 * minority)
        else:
            dropped_samples += len(outcomes)
    assert set(counts) == expected_kept
    assert stats.questions_in == sum(1 for outcomes in questions if outcomes)
    assert stats.questions_kept == len(expected_kept)
    assert stats.dropped_all_correct == sum(1 for o in questions if o and all(o))
    assert stats.dropped_all_wrong == sum(1 for o in questions if o and not any(o))
    assert stats.samples_in == len(rows) + len(duplicates)
    assert stats.duplicates_dropped == len(duplicates)
    assert stats.samples_in == len(kept) + dropped_samples + stats.duplicates_dropped + stats.downsampled
    assert stats.positives + stats.negatives == len(kept)
    assert stats.positives == sum(bool(r["correct"]) for r in kept)


# --- orm_example ---------------------------------------------------------------------------------


@pytest.mark.parametrize("correct, label", [(True, 1.0), (False, 0.0)])
def test_orm_example_labels_every_unit_with_the_outcome(correct, label):
    sample = {"unique_id": "q", "completion": "First, $1+1=2$.\n\nThen $2+2=4$.\n\n# Answer\n\n4", "correct": correct}
    example = orm_example(sample, "Compute $1+1+2$.")
    assert example == {
        "unique_id": "q",
        "problem": "Compute $1+1+2$.",
        "steps": ["First, $1+1=2$.", "Then $2+2=4$."],
        "answer": "4",
        "labels": [label] * 3,
        "kind": "orm",
    }


def test_orm_example_without_answer_section():
    sample = {"unique_id": "q", "completion": "One.\n\nTwo.\n\nThree.", "correct": False}
    example = orm_example(sample, "P")
    assert example["steps"] == ["One.", "Two.", "Three."]
    assert example["answer"] is None
    assert example["labels"] == [0.0, 0.0, 0.0]


# --- PRM800K: the real sample records --------------------------------------------------------------


@pytest.fixture(scope="module")
def prm800k_records() -> list[dict]:
    if not all((PRM800K_EXAMPLES_DIR / name).exists() for name in SAMPLE_FILES):
        pytest.skip(f"PRM800K sample records not found under {PRM800K_EXAMPLES_DIR}")
    return [r for name in SAMPLE_FILES for r in prm800k_data.read_records(PRM800K_EXAMPLES_DIR / name)]


def expected_prm800k(records):
    """(record index, step number, completion) of every rated completion the labeler's path
    reached (chosen, else human, else the only completion), each (problem, prefix, text) once."""
    expected, seen = [], set()
    for index, record in enumerate(records, start=1):
        prefix = []
        for number, step in enumerate(record["label"]["steps"], start=1):
            for c in step["completions"]:
                key = (record["question"]["problem"], tuple(prefix), c["text"])
                if c["rating"] is not None and key not in seen:
                    seen.add(key)
                    expected.append((index, number, c))
            if step["chosen_completion"] is not None:
                prefix.append(step["completions"][step["chosen_completion"]]["text"])
            elif step["human_completion"] is not None:
                prefix.append(step["human_completion"]["text"])
            elif len(step["completions"]) == 1:
                prefix.append(step["completions"][0]["text"])
            else:
                break
    return expected


def test_prm800k_samples_every_rated_completion_is_an_example(prm800k_records):
    assert len(prm800k_records) == 5
    examples, counts = prm800k_examples(prm800k_records, {}, [1, 2, 3], set(), "samples")
    expected = expected_prm800k(prm800k_records)
    assert len(examples) == len(expected) == counts["examples"]
    assert counts["records kept"] == 5
    # Record 2 (give_up) ends with a step whose 7 completions are all unrated.
    assert counts["null ratings skipped"] == 7
    # Record 4 (phase-1 test) is record 1 (phase-1 train) again: all of it is a duplicate.
    assert counts["duplicates dropped"] == sum(
        c["rating"] is not None for _, _, c in expected_prm800k(prm800k_records[:1])
    )
    assert not any(e["unique_id"].startswith("prm800k/4/") for e in examples)
    for example, (index, number, completion) in zip(examples, expected):
        assert example["unique_id"] == f"prm800k/{index}/{number}"
        assert example["kind"] == "prm"
        assert example["problem"] == prm800k_records[index - 1]["question"]["problem"]
        record_steps = prm800k_records[index - 1]["label"]["steps"]
        # The prefix: the chosen (or human) completion of every earlier step, unlabelled.
        prefix = []
        for step in record_steps[: number - 1]:
            chosen = (
                step["human_completion"]["text"]
                if step["human_completion"]
                else step["completions"][step["chosen_completion"]]["text"]
            )
            prefix += formats.parse_solution(chosen)[0]
        assert example["steps"][: len(prefix)] == prefix
        own_steps, own_answer = formats.parse_solution(completion["text"])
        assert example["steps"][len(prefix) :] == own_steps
        assert example["answer"] == own_answer
        label = 0.0 if completion["rating"] == -1 else 1.0
        units = len(example["steps"]) + (example["answer"] is not None)
        assert example["labels"] == [None] * len(prefix) + [label] * (units - len(prefix))


def test_prm800k_labels_by_rating(prm800k_records):
    examples, _ = prm800k_examples(prm800k_records, {}, [1, 2, 3], set(), "samples")
    ratings = [c["rating"] for _, _, c in expected_prm800k(prm800k_records)]
    assert set(ratings) == {-1, 0, 1}  # the samples exercise all three ratings
    for example, rating in zip(examples, ratings):
        assert example["labels"][-1] == {-1: 0.0, 0: 1.0, 1: 1.0}[rating]


def test_prm800k_human_completion_joins_the_prefix(prm800k_records):
    """phase1_train record 1: the labeler wrote step 2 ("We have $3p+e=1.24$ and $5p+e=1.82$.")."""
    record = prm800k_records[0]
    human = record["label"]["steps"][1]["human_completion"]["text"]
    assert human == "We have $3p+e=1.24$ and $5p+e=1.82$."
    first = record["label"]["steps"][0]["completions"][0]["text"]
    examples, _ = prm800k_examples([record], {}, [1, 2, 3], set(), "samples")
    by_step = Counter(e["unique_id"] for e in examples)
    assert by_step["prm800k/1/2"] == 5  # the five rated (-1) model completions of step 2
    step2 = [e for e in examples if e["unique_id"] == "prm800k/1/2"]
    assert all(e["steps"][0] == first and e["labels"] == [None, 0.0] for e in step2)
    step3 = [e for e in examples if e["unique_id"] == "prm800k/1/3"]
    assert len(step3) == 1
    assert step3[0]["steps"][:2] == [first, human]
    assert step3[0]["labels"] == [None, None, 1.0]


def test_prm800k_answer_completion_labels_the_answer_unit(prm800k_records):
    record = prm800k_records[0]
    examples, _ = prm800k_examples([record], {}, [1, 2, 3], set(), "samples")
    with_answer = [e for e in examples if e["answer"] is not None]
    assert len(with_answer) == 2  # step 6's two "... # Answer\n\n29" completions
    for example in with_answer:
        assert example["unique_id"] == "prm800k/1/6"
        assert example["answer"] == "29"
        assert len(example["steps"]) == 6
        assert example["labels"] == [None] * 5 + [1.0, 1.0]  # the step and the answer section


def test_prm800k_found_error_stops_at_the_unchosen_step(prm800k_records):
    """phase2 record: step 7 has rated completions but none chosen (found_error)."""
    record = prm800k_records[4]
    assert record["label"]["finish_reason"] == "found_error"
    examples, _ = prm800k_examples([record], {}, [1, 2, 3], set(), "samples")
    assert len(examples) == 6 + 4
    last = [e for e in examples if e["unique_id"] == "prm800k/1/7"]
    assert [e["labels"][-1] for e in last] == [0.0, 1.0, 1.0, 1.0]
    assert all(e["labels"][:6] == [None] * 6 for e in last)


def sample_problems(records):
    return [r["question"]["problem"].strip() for r in records]


def test_prm800k_level_filter_with_hand_made_levels(prm800k_records):
    problems = sample_problems(prm800k_records)
    levels = {problems[0]: 2, problems[1]: 5, problems[2]: None}  # record 3 unlevelled, 4 shares 1's problem
    examples, counts = prm800k_examples(prm800k_records, levels, [1, 2, 3], set(), "samples")
    ids = {e["unique_id"].split("/")[1] for e in examples}
    assert ids == {"1", "5"}  # record 4 repeats record 1 (de-duplicated); record 5 is not in the map: kept
    assert counts["records of hard (or unlevelled) MATH problems"] == 2
    assert counts["records kept"] == 3

    examples, counts = prm800k_examples(prm800k_records, levels, [1, 2, 3], {problems[0]}, "samples")
    assert {e["unique_id"].split("/")[1] for e in examples} == {"5"}
    assert (
        counts["records of excluded problems (test, validation, hard train)"] == 2
    )  # phase-1 train record 1 and the phase-1 test record


def test_prm800k_with_real_math_levels(prm800k_records, math_dir):
    levels, ids = {}, {}
    for name in ("train.jsonl", "test.jsonl"):
        for row in read_jsonl(math_dir / name):
            levels[row["problem"].strip()] = row["level"]
            ids[row["problem"].strip()] = (name, row["unique_id"], row["level"])
    math500 = {row["problem"].strip() for row in read_jsonl(math_dir / "test.jsonl")}
    problems = sample_problems(prm800k_records)
    # What the five sample records are in MATH: all MATH500 (PRM800K's held-out test) problems.
    assert [ids.get(p) for p in problems] == [
        ("test.jsonl", "test/algebra/2743.json", 2),
        ("test.jsonl", "test/intermediate_algebra/1411.json", 4),
        ("test.jsonl", "test/number_theory/46.json", 2),
        ("test.jsonl", "test/algebra/2743.json", 2),
        ("test.jsonl", "test/counting_and_probability/159.json", 5),
    ]
    # Level filter alone: the level-2 records stay, the level-4 and level-5 ones go.
    examples, counts = prm800k_examples(prm800k_records, levels, [1, 2, 3], set(), "samples")
    assert {e["unique_id"].split("/")[1] for e in examples} == {"1", "3"}  # 4 repeats 1
    assert counts["records of hard (or unlevelled) MATH problems"] == 2
    # As the pipeline runs it (MATH500 as the test questions): every sample record is a test problem.
    examples, counts = prm800k_examples(prm800k_records, levels, [1, 2, 3], math500, "samples")
    assert examples == []
    assert counts["records of excluded problems (test, validation, hard train)"] == 5


def prm_record(problem, steps, finish_reason="solution"):
    return {"question": {"problem": problem}, "label": {"steps": steps, "finish_reason": finish_reason}}


def test_prm800k_hand_records():
    steps = [
        {
            "completions": [{"text": "A.", "rating": 1}, {"text": "X.", "rating": None}],
            "human_completion": None,
            "chosen_completion": 0,
        },
        {
            "completions": [{"text": "B.", "rating": 0}, {"text": "Y.", "rating": -1}],
            "human_completion": None,
            "chosen_completion": None,
        },
        {"completions": [{"text": "never reached", "rating": 1}], "human_completion": None, "chosen_completion": 0},
    ]
    records = [
        prm_record("P1", steps, "give_up"),
        prm_record("P2", []),
        {"question": {"problem": "P3"}, "label": {"steps": None}},
    ]
    examples, counts = prm800k_examples(records, {}, [1, 2, 3], set(), "hand")
    assert [(e["unique_id"], e["steps"], e["labels"]) for e in examples] == [
        ("prm800k/1/1", ["A."], [1.0]),
        ("prm800k/1/2", ["A.", "B."], [None, 1.0]),
        ("prm800k/1/2", ["A.", "Y."], [None, 0.0]),
    ]
    assert counts["null ratings skipped"] == 1
    assert counts["records without steps"] == 2
    assert counts["records kept"] == 1


def test_prm800k_empty_rated_completion_gives_no_label_less_example():
    steps = [
        {"completions": [{"text": "A.", "rating": 1}], "human_completion": None, "chosen_completion": 0},
        {
            "completions": [{"text": "", "rating": 1}, {"text": "  ", "rating": -1}, {"text": "B.", "rating": 1}],
            "human_completion": None,
            "chosen_completion": 2,
        },
    ]
    examples, _ = prm800k_examples([prm_record("P", steps)], {}, [1, 2, 3], set(), "hand")
    assert examples, "the non-empty completions must still give examples"
    assert all(any(label is not None for label in e["labels"]) for e in examples)


def test_orm_empty_completion_gives_no_label_less_example():
    rows = [
        {"unique_id": "q", "sample_index": 0, "completion": "We add.\n\n# Answer\n\n2", "correct": True},
        {"unique_id": "q", "sample_index": 1, "completion": "", "correct": False},
    ]
    kept, stats = balance_orm(rows, max_ratio=3, seed=0)
    examples = [orm_example(sample, "P") for sample in kept]
    assert all(e["labels"] for e in examples)
    assert stats.unscorable_dropped == 1 and stats.dropped_all_correct == 1


def test_prm800k_missing_fields_raise():
    with pytest.raises(DataError, match="hand: record 2"):
        prm800k_examples([prm_record("P", []), {"label": {"steps": []}}], {}, [1], set(), "hand")


def test_read_prm800k_names_file_and_line(tmp_path):
    path = tmp_path / "phase2_train.jsonl"
    good = json.dumps(prm_record("P", []))
    path.write_text(good + "\n" + good[:-5] + "\n")
    with pytest.raises(DataError) as error:
        prm800k_data.read_records(str(path))
    assert f"{path}:2" in str(error.value)
    path.write_text(good + "\n" + json.dumps({"question": {"problem": "P"}}) + "\n")
    with pytest.raises(DataError, match=r":2: missing field\(s\) label"):
        prm800k_data.read_records(str(path))


# --- automatic (Monte-Carlo) step labels -------------------------------------------------------------


def test_rollout_prefixes_one_per_step_without_answer():
    sample = {"completion": "One.\n\nTwo.\nstill two.\n\nThree.\n\n# Answer\n\n7"}
    assert evaluator_data.rollout_prefixes(sample) == [
        "One.",
        "One.\n\nTwo.\nstill two.",
        "One.\n\nTwo.\nstill two.\n\nThree.",
    ]
    assert evaluator_data.rollout_prefixes({"completion": "One.\n\nTwo."}) == ["One.", "One.\n\nTwo."]
    assert evaluator_data.rollout_prefixes({"completion": "# Answer\n\n7"}) == []


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text("ab .$1\n", min_size=1, max_size=12), min_size=1, max_size=6),
    st.text("0123456789", min_size=1, max_size=3),
)
def test_rollout_prefixes_never_contain_the_answer(steps, answer):
    steps = [formats.normalize_step(s) for s in steps]
    steps = [s for s in steps if s]
    if not steps:
        return
    completion = formats.format_solution(steps, answer)
    prefixes = evaluator_data.rollout_prefixes({"completion": completion})
    assert len(prefixes) == len(formats.parse_solution(completion)[0])
    assert all(formats.ANSWER_HEADER not in p for p in prefixes)
    assert all(completion.startswith(p) for p in prefixes)


@pytest.mark.parametrize(
    "outcomes, hard, soft",
    [
        ([True], 1.0, 1.0),
        ([False, False], 0.0, 0.0),
        ([False, True, False, False], 1.0, 0.25),
        ([True, True, False], 1.0, 2 / 3),
    ],
)
def test_step_label(outcomes, hard, soft):
    assert evaluator_data.step_label(outcomes, "hard") == hard
    assert evaluator_data.step_label(outcomes, "soft") == pytest.approx(soft)


def test_step_label_errors():
    with pytest.raises(ValueError, match="at least one rollout"):
        evaluator_data.step_label([], "hard")
    with pytest.raises(ValueError, match="unknown estimate"):
        evaluator_data.step_label([True], "median")


@pytest.mark.parametrize("correct", [True, False])
def test_auto_prm_example(correct):
    sample = {"unique_id": "q", "completion": "One.\n\nTwo.\n\nThree.\n\n# Answer\n\n7", "correct": correct}
    groups = [[True, True], [True, False, False, False], [False, False]]
    example = evaluator_data.auto_prm_example(sample, "P", groups, "soft")
    assert example["steps"] == ["One.", "Two.", "Three."]
    assert example["answer"] == "7"
    assert example["labels"] == [1.0, 0.25, 0.0, float(correct)]
    assert example["kind"] == "prm"
    hard = evaluator_data.auto_prm_example(sample, "P", groups, "hard")
    assert hard["labels"] == [1.0, 1.0, 0.0, float(correct)]
    # Without an answer section there is no answer unit.
    no_answer = evaluator_data.auto_prm_example({**sample, "completion": "One.\n\nTwo."}, "P", groups[:2], "hard")
    assert no_answer["labels"] == [1.0, 1.0]


def test_auto_prm_example_rejects_mismatched_rollouts():
    sample = {"unique_id": "q7", "completion": "One.\n\nTwo.\n\n# Answer\n\n7", "correct": True}
    with pytest.raises(ValueError, match="q7: 3 rollout groups for 2 steps"):
        evaluator_data.auto_prm_example(sample, "P", [[True]] * 3, "hard")
    with pytest.raises(ValueError):
        evaluator_data.auto_prm_example(sample, "P", [[True]], "hard")


# --- OPRM mixture and summary --------------------------------------------------------------------------


def labelled(kind, n, prefix):
    return [
        {"unique_id": f"{prefix}{i}", "problem": f"{prefix}{i % 3}", "labels": [1.0], "kind": kind} for i in range(n)
    ]


@pytest.mark.parametrize("prm_fraction, orm_fraction", [(0.5, 1 / 3), (1.0, 1.0), (0.0, 0.7), (0.25, 0.0)])
def test_mix_fractions_and_membership(prm_fraction, orm_fraction):
    prm, orm = labelled("prm", 7, "p"), labelled("orm", 9, "o")
    mixed = evaluator_data.mix(prm, orm, prm_fraction, orm_fraction, seed=1)
    kinds = Counter(e["kind"] for e in mixed)
    assert kinds["prm"] == round(prm_fraction * 7)
    assert kinds["orm"] == round(orm_fraction * 9)
    assert all(any(e is x for x in prm + orm) for e in mixed)
    assert len({id(e) for e in mixed}) == len(mixed)  # sampled without replacement


def test_mix_is_seeded_and_shuffled():
    prm, orm = labelled("prm", 20, "p"), labelled("orm", 20, "o")

    def ids(seed):
        return [e["unique_id"] for e in evaluator_data.mix(prm, orm, 0.5, 0.5, seed)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    kinds = [e["kind"] for e in evaluator_data.mix(prm, orm, 1.0, 1.0, 3)]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)  # interleaved


def test_summarize_counts():
    examples = [
        {"problem": "A", "labels": [None, 1.0, 0.0], "kind": "prm"},
        {"problem": "A", "labels": [1.0, 1.0], "kind": "orm"},
        {"problem": "B", "labels": [0.5, None], "kind": "prm"},
    ]
    assert evaluator_data.summarize(examples) == {
        "examples": 3,
        "problems": 2,
        "labelled_units": 5,
        "positive_fraction": 0.7,
        "kinds": {"prm": 2, "orm": 1},
    }
    assert evaluator_data.summarize([])["positive_fraction"] is None


# --- no hard gold answer -------------------------------------------------------------------------


@pytest.fixture
def easy_and_hard(tmp_path):
    """A graded train file as grade_train writes it: hard questions have correct None."""
    easy = [
        {"unique_id": f"easy/{i}", "problem": f"Compute ${i} + 1$.", "answer": str(i + 1), "level": 1 + i % 3}
        for i in range(6)
    ]
    hard = [
        {"unique_id": f"hard/{i}", "problem": f"Compute ${i} \\times 7$.", "answer": str(7 * i), "level": 4 + i % 2}
        for i in range(6)
    ]
    rows = []
    for question in easy + hard:
        is_hard = question["level"] > 3
        for index in range(4):
            right = index % 2 == 0
            value = question["answer"] if right else "0"
            rows.append(
                {
                    "unique_id": question["unique_id"],
                    "level": question["level"],
                    "sample_index": index,
                    "completion": f"We compute it, attempt {index}.\n\nSo we get {value}.\n\n# Answer\n\n{value}",
                    "correct": None if is_hard else right,
                }
            )
    write_jsonl(tmp_path / "train_easy.jsonl", easy)
    write_jsonl(tmp_path / "graded.jsonl", rows)
    return tmp_path, {q["unique_id"] for q in easy}, {q["unique_id"] for q in hard}


def load_script(name):
    path = REPO_ROOT / "workflow" / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"easy2hard_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_orm_data_never_uses_hard_questions(easy_and_hard):
    folder, easy_ids, hard_ids = easy_and_hard
    problems = {r["unique_id"]: r["problem"] for r in read_jsonl(folder / "train_easy.jsonl")}
    kept, stats = balance_orm(read_jsonl(folder / "graded.jsonl"), max_ratio=3, seed=0)
    examples = [orm_example(sample, problems[sample["unique_id"]]) for sample in kept]
    assert {e["unique_id"] for e in examples} == easy_ids
    assert not {e["unique_id"] for e in examples} & hard_ids
    assert stats.questions_in == len(easy_ids)


@pytest.mark.parametrize("estimate", ["hard", "soft"])
def test_automatic_step_labels_never_use_hard_questions(easy_and_hard, monkeypatch, estimate):
    """Runs prm_data.automatic_labels with the policy, sampler and grader stubbed out."""
    folder, easy_ids, hard_ids = easy_and_hard
    script = load_script("prm_data")
    problems_seen = []

    class StubModel:
        def to(self, device):
            return self

        def eval(self):
            return self

    def fake_encode(tokenizer, problem, prefix=""):
        problems_seen.append(problem)
        return [problem, prefix]

    def fake_generate(model, tokenizer, prompts, config, progress=True, desc="sample", usage=None, model_path=None):
        usage.count("engine", len(prompts))
        for _ in prompts:
            yield [{"text": f"\n\n# Answer\n\n{i}"} for i in range(config.num_samples)]

    monkeypatch.setattr(modeling, "load_model", lambda path, dtype=None: (StubModel(), object()))
    monkeypatch.setattr(sampling, "encode_prompt", fake_encode)
    monkeypatch.setattr(sampling, "generate", fake_generate)
    monkeypatch.setattr(script, "grade_many", lambda pairs, timeout, workers, mode, stats: [a == g for a, g in pairs])
    args = SimpleNamespace(
        graded=str(folder / "graded.jsonl"), answers=[str(folder / "train_easy.jsonl")], policy="unused"
    )
    cfg = {
        "auto": {"num_questions": 100, "rollouts": 3, "estimate": estimate, "seed": 0},
        "sampling": {"max_new_tokens": 8, "batch_size": 4},
        "grading": {"mode": "lenient", "timeout": 1.0, "workers": 1},
    }
    examples, counts, facts = script.automatic_labels(args, cfg)
    assert facts["sampling"]["prompts"] == {"engine": counts["rollouts"] // 3}  # the back end, for the provenance
    assert examples
    assert {e["unique_id"] for e in examples} == easy_ids
    assert counts["questions"] == len(easy_ids)
    hard_problems = {f"Compute ${i} \\times 7$." for i in range(6)}
    assert problems_seen and not set(problems_seen) & hard_problems
    assert all(len(e["labels"]) == len(e["steps"]) + 1 for e in examples)
