"""Loaders and the easy/hard split: determinism, stratification, leakage guards, input errors."""

import functools
import json
import re
from collections import Counter

import pytest

from easy2hard import data, synthetic
from easy2hard.data import load_math_jsonl, question, split_problems, stratified_sample
from easy2hard.io import DataError

QUESTION_KEYS = {"unique_id", "problem", "level", "subject"}
EASY_KEYS = QUESTION_KEYS | {"steps", "answer"}
GOLD_KEYS = {"unique_id", "level", "subject", "answer"}
EASY = [1, 2, 3]


def cells(rows):
    return Counter((row["subject"], row["level"]) for row in rows)


def row(uid, level, subject="Algebra", answer="1", solution=None, problem=None):
    return {
        "problem": problem or f"Problem {uid}: find the value of $x$.",
        "solution": solution
        if solution is not None
        else f"We compute the value for {uid} carefully. It is $\\boxed{{{answer}}}$.",
        "answer": answer,
        "subject": subject,
        "level": level,
        "unique_id": uid,
    }


# --- synthetic.generate_splits -----------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _synthetic(num_train, num_test, seed):
    return synthetic.generate_splits(num_train, num_test, seed)


def test_generate_splits_deterministic_for_a_seed():
    assert synthetic.generate_splits(300, 50, 7) == synthetic.generate_splits(300, 50, 7)


def test_generate_splits_differ_across_seeds():
    train0, test0 = _synthetic(600, 100, 0)
    train1, test1 = _synthetic(600, 100, 1)
    assert [r["problem"] for r in test0] != [r["problem"] for r in test1]
    assert [r["problem"] for r in train0] != [r["problem"] for r in train1]


def test_generate_splits_test_is_balanced_distinct_and_held_out():
    train, test = _synthetic(2000, 200, 0)
    assert len(train) == 2000 and len(test) == 200
    per_cell = cells(test)
    assert set(per_cell) == {(s, lv) for s in synthetic.SUBJECT_OPERATORS for lv in synthetic.LEVELS}
    assert set(per_cell.values()) == {20}
    assert len({r["problem"] for r in test}) == len(test)
    assert not {r["problem"] for r in test} & {r["problem"] for r in train}
    assert len({r["unique_id"] for r in train + test}) == len(train) + len(test)


def test_per_level_train_counts_and_a_value_bound():
    """An easy-heavy pool (one count per level) whose solutions never leave [0, max_value]: hard
    problems need the same arithmetic facts as easy ones, only more of them in a row."""
    train, test = synthetic.generate_splits([30, 30, 30, 5, 5], 40, 0, max_value=20)
    assert Counter(r["level"] for r in train) == {1: 30, 2: 30, 3: 30, 4: 5, 5: 5}
    assert Counter(r["level"] for r in test) == {level: 8 for level in synthetic.LEVELS}
    for row in train + test:
        numbers = [int(n) for n in re.findall(r"-?\d+", row["solution"])]
        assert numbers and all(0 <= n <= 20 for n in numbers), row["solution"]
    with pytest.raises(ValueError, match="one number per level"):
        synthetic.generate([1, 2], 0, "train")


def test_synthetic_rows_follow_the_math_schema():
    train, test = _synthetic(2000, 200, 0)
    math_fields = {"problem", "solution", "answer", "subject", "level", "unique_id"}  # PRM800K's math_splits
    for r in train + test:
        assert set(r) == math_fields
        assert isinstance(r["level"], int) and 1 <= r["level"] <= 5
        assert r["problem"].count("+") + r["problem"].count("-") + r["problem"].count("\\times") == r["level"]
        if r["subject"] == "Addition and Subtraction":
            assert "\\times" not in r["problem"]


# --- split_problems on synthetic data ---------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _synthetic_split(valid_size, seed=0):
    train, test = _synthetic(2000, 200, 0)
    return split_problems(train, test, EASY, valid_size=valid_size, seed=seed)


def test_split_counts_add_up():
    train, test = _synthetic(2000, 200, 0)
    split = _synthetic_split(100)
    counts = split.summary["counts"]
    dropped = sum(split.summary["dropped"].values())
    assert len(split.train_easy) + len(split.train_hard) + len(split.valid) + dropped == len(train)
    assert counts == {
        "train_easy": len(split.train_easy),
        "train_hard": len(split.train_hard),
        "valid": 100,
        "test": 200,
        "test_easy": 120,
        "test_hard": 80,
        "train_hard_oracle": len(split.train_hard),  # every synthetic hard problem has a solution
        "train_hard_without_answer_or_solution": 0,
    }
    assert len(split.test) == len(split.test_gold) == 200
    assert len(split.valid_gold) == 100
    assert split.summary["easy_levels"] == EASY and split.summary["seed"] == 0


def test_split_row_keys_are_the_leakage_guard():
    split = _synthetic_split(100)
    assert split.train_easy and split.train_hard
    for r in split.train_easy:
        assert set(r) == EASY_KEYS
        assert r["level"] in EASY
        assert r["steps"] and all(r["steps"])
        assert r["answer"] is not None
    for name in ("train_hard", "valid", "test"):
        for r in getattr(split, name):
            assert set(r) == QUESTION_KEYS, name
    # The oracle file (read by the oracle stages only) holds the same hard questions, solved.
    assert [question(r) for r in split.train_hard_oracle] == split.train_hard
    for r in split.train_hard_oracle:
        assert set(r) == EASY_KEYS and r["level"] not in EASY and r["steps"] and r["answer"] is not None
    assert all(r["level"] not in EASY for r in split.train_hard)
    for name in ("valid_gold", "test_gold"):
        for r in getattr(split, name):
            assert set(r) == GOLD_KEYS, name
            assert r["answer"] is not None


def test_gold_records_line_up_with_questions():
    train, test = _synthetic(2000, 200, 0)
    split = _synthetic_split(100)
    assert [g["unique_id"] for g in split.test_gold] == [q["unique_id"] for q in split.test]
    assert [g["unique_id"] for g in split.valid_gold] == [q["unique_id"] for q in split.valid]
    by_id = {r["unique_id"]: r for r in train + test}
    for g in split.valid_gold + split.test_gold:
        assert g["answer"] == by_id[g["unique_id"]]["answer"]
        assert g["level"] == by_id[g["unique_id"]]["level"]


def test_valid_ids_disjoint_from_train():
    split = _synthetic_split(100)
    valid_ids = {r["unique_id"] for r in split.valid}
    train_ids = {r["unique_id"] for r in split.train_easy + split.train_hard}
    assert len(valid_ids) == 100
    assert not valid_ids & train_ids
    assert not valid_ids & {r["unique_id"] for r in split.test}


def test_valid_follows_test_proportions():
    half = _synthetic_split(100)
    assert cells(half.valid) == Counter({cell: n // 2 for cell, n in cells(half.test).items()})
    full = _synthetic_split(200)
    assert cells(full.valid) == cells(full.test)


def test_split_same_seed_same_split_and_seed_matters():
    train, test = _synthetic(2000, 200, 0)
    again = split_problems(train, test, EASY, valid_size=100, seed=0)
    first = _synthetic_split(100)
    assert again.valid == first.valid and again.train_easy == first.train_easy
    assert again.train_hard == first.train_hard
    other = _synthetic_split(100, seed=1)
    assert {r["unique_id"] for r in other.valid} != {r["unique_id"] for r in first.valid}


def test_valid_size_zero_gives_empty_valid():
    split = _synthetic_split(0)
    assert split.valid == [] and split.valid_gold == []
    assert split.summary["counts"]["valid"] == 0


def test_easy_levels_decide_train_easy_and_test_counts():
    train, test = _synthetic(2000, 200, 0)
    split = split_problems(train, test, [1], valid_size=0, seed=0)
    assert {r["level"] for r in split.train_easy} == {1}
    assert {r["level"] for r in split.train_hard} == {2, 3, 4, 5}
    assert split.summary["counts"]["test_easy"] == 40
    assert split.summary["counts"]["test_hard"] == 160


def test_valid_problem_texts_do_not_appear_in_train():
    split = _synthetic_split(100)
    valid_texts = {r["problem"].strip() for r in split.valid}
    leaked = [r for r in split.train_easy + split.train_hard if r["problem"].strip() in valid_texts]
    assert not leaked


# --- stratified_sample -----------------------------------------------------------------------------


def _pool(per_cell):
    return [
        {"subject": subject, "level": 1, "unique_id": f"{subject}/{i}"}
        for subject, count in per_cell.items()
        for i in range(count)
    ]


REFERENCE = _pool({"A": 3, "B": 2, "C": 1})  # quotas for size n: A n/2, B n/3, C n/6


@pytest.mark.parametrize(
    "size, expected",
    [
        (6, {"A": 3, "B": 2, "C": 1}),
        (4, {"A": 2, "B": 1, "C": 1}),  # 2, 1.33, 0.67: the extra seat goes to C
        (5, {"A": 2, "B": 2, "C": 1}),  # 2.5, 1.67, 0.83: extra seats to C, then B
        (2, {"A": 1, "B": 1}),  # 1, 0.67, 0.33: B wins the single extra seat
        (1, {"A": 1}),  # 0.5, 0.33, 0.17: largest remainder is A
        (0, {}),
    ],
)
def test_stratified_sample_largest_remainder(size, expected):
    pool = _pool({"A": 10, "B": 10, "C": 10})
    chosen = stratified_sample(pool, REFERENCE, size, seed=0)
    assert len(chosen) == size
    assert len({r["unique_id"] for r in chosen}) == size
    assert Counter(r["subject"] for r in chosen) == Counter(expected)
    assert all(r in pool for r in chosen)


def test_stratified_sample_deterministic_and_seeded():
    pool = _pool({"A": 30, "B": 30, "C": 30})
    first = stratified_sample(pool, REFERENCE, 6, seed=5)
    assert stratified_sample(pool, REFERENCE, 6, seed=5) == first
    assert any(stratified_sample(pool, REFERENCE, 6, seed=s) != first for s in range(6, 12))


def test_stratified_sample_ignores_cells_not_in_reference():
    pool = _pool({"A": 10, "B": 10, "C": 10, "Z": 50})
    chosen = stratified_sample(pool, REFERENCE, 6, seed=0)
    assert "Z" not in {r["subject"] for r in chosen}


def test_stratified_sample_cell_without_enough_candidates():
    pool = _pool({"A": 10, "B": 1, "C": 10})
    with pytest.raises(DataError, match=r"'B'"):
        stratified_sample(pool, REFERENCE, 6, seed=0)


def test_stratified_sample_size_exceeds_pool():
    pool = _pool({"A": 2, "B": 1, "C": 1})
    with pytest.raises(DataError, match="exceeds"):
        stratified_sample(pool, REFERENCE, 5, seed=0)


# --- dropped and rejected rows ------------------------------------------------------------------


def _small_test():
    return [row(f"test/{lv}", lv, answer=str(lv)) for lv in range(1, 6)]


def test_null_level_rows_are_dropped_and_counted():
    pool = [row("t/ok1", 1), row("t/ok4", 4), row("t/null1", None), row("t/null2", None)]
    split = split_problems(pool, _small_test(), EASY, valid_size=0, seed=0)
    assert split.summary["dropped"] == {"level is null": 2}
    ids = {r["unique_id"] for r in split.train_easy + split.train_hard}
    assert ids == {"t/ok1", "t/ok4"}


def test_easy_rows_without_answer_or_solution_are_dropped():
    pool = [
        row("t/easy", 2),
        row("t/easy-no-answer", 2, answer=None),
        row("t/easy-no-solution", 3, solution=""),
        row("t/hard-no-answer", 5, answer=None),
    ]
    split = split_problems(pool, _small_test(), EASY, valid_size=0, seed=0)
    assert split.summary["dropped"] == {"easy without answer or solution": 2}
    assert [r["unique_id"] for r in split.train_easy] == ["t/easy"]
    # hard questions need no answer: they are kept (question only)
    assert split.train_hard == [data.question(pool[3])]


def test_rows_without_answer_are_never_validation():
    pool = [row(f"t/{lv}/{i}", lv, answer=None if i % 2 else "5") for lv in range(1, 6) for i in range(4)]
    split = split_problems(pool, _small_test(), EASY, valid_size=5, seed=0)
    assert len(split.valid) == 5
    assert all(g["answer"] == "5" for g in split.valid_gold)


def test_train_problems_also_in_test_are_dropped():
    test = _small_test()
    copy = row("t/copy", 4, problem="\n " + test[3]["problem"] + "  ")
    pool = [row("t/a", 1), copy, row("t/b", 5)]
    split = split_problems(pool, test, EASY, valid_size=0, seed=0)
    assert split.summary["dropped"] == {"also in test": 1}
    assert "t/copy" not in {r["unique_id"] for r in split.train_easy + split.train_hard}


@pytest.mark.parametrize("field", ["answer", "level"])
def test_test_rows_without_answer_or_level_raise(field):
    test = _small_test()
    test[2][field] = None
    with pytest.raises(DataError, match="test row 3"):
        split_problems([row("t/a", 1)], test, EASY, valid_size=0, seed=0)


def test_validation_larger_than_usable_pool_raises():
    with pytest.raises(DataError):
        split_problems([row("t/a", 1)], _small_test(), EASY, valid_size=3, seed=0)


def test_empty_test_set_with_validation_is_a_data_error():
    with pytest.raises(DataError):
        split_problems([row("t/a", 1)], [], EASY, valid_size=1, seed=0)


def test_easy_row_with_blank_solution_is_dropped():
    split = split_problems([row("t/blank", 1, solution="  \n ")], _small_test(), EASY, valid_size=0, seed=0)
    assert all(r["steps"] for r in split.train_easy)


# --- load_math_jsonl errors ----------------------------------------------------------------------


def _write(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def _good(uid="x/1", **changes):
    return json.dumps({**row(uid, 2), **changes})


def _after_path(message, path):
    assert str(path) in message
    return message.split(str(path), 1)[1]


def test_load_math_jsonl_reads_rows_and_skips_blank_lines(tmp_path):
    path = _write(tmp_path / "ok.jsonl", [_good("x/1"), "", "   ", _good("x/2", level=None, answer=None)])
    rows = load_math_jsonl(str(path))
    assert [r["unique_id"] for r in rows] == ["x/1", "x/2"]
    assert rows[1]["level"] is None and rows[1]["answer"] is None


def test_load_math_jsonl_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [_good("x/1"), _good("x/2"), '{"problem": "cut off'])
    with pytest.raises(DataError) as info:
        load_math_jsonl(str(path))
    rest = _after_path(str(info.value), path)
    assert rest.startswith(":3:")
    assert "JSON" in rest


def test_load_math_jsonl_non_utf8_names_the_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [_good("x/1"), b'{"problem": "caf\xe9 \xff"}'])
    with pytest.raises(DataError) as info:
        load_math_jsonl(str(path))
    rest = _after_path(str(info.value), path)
    assert rest.startswith(":2:")
    assert "UTF-8" in rest


def test_load_math_jsonl_non_object_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [_good("x/1"), "[1, 2]"])
    with pytest.raises(DataError, match=r":2: expected a JSON object"):
        load_math_jsonl(str(path))


@pytest.mark.parametrize("field", ["problem", "level", "unique_id"])
def test_load_math_jsonl_missing_field_is_named(tmp_path, field):
    record = row("x/2", 2)
    del record[field]
    path = _write(tmp_path / "bad.jsonl", [_good("x/1"), json.dumps(record)])
    with pytest.raises(DataError) as info:
        load_math_jsonl(str(path))
    rest = _after_path(str(info.value), path)
    assert rest.startswith(":2:")
    assert field in rest


@pytest.mark.parametrize(
    "field, value",
    [
        ("level", "3"),
        ("level", 3.0),
        ("level", True),
        ("problem", ""),
        ("problem", 5),
        ("answer", 12),
        ("solution", ["a"]),
        ("subject", 1),
        ("unique_id", 7),
    ],
)
def test_load_math_jsonl_wrong_type_names_the_field(tmp_path, field, value):
    path = _write(tmp_path / "bad.jsonl", [_good("x/1"), _good("x/2", **{field: value})])
    with pytest.raises(DataError) as info:
        load_math_jsonl(str(path))
    rest = _after_path(str(info.value), path)
    assert f"'{field}'" in rest
    assert "row 2" in rest


def test_load_math_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_math_jsonl(str(tmp_path / "absent.jsonl"))


def test_load_source_synthetic_and_unknown():
    train, test = data.load_source({"source": "synthetic", "synthetic": {"num_train": 50, "num_test": 20, "seed": 4}})
    assert (train, test) == synthetic.generate_splits(50, 20, 4)
    with pytest.raises(DataError, match="data.source"):
        data.load_source({"source": "nowhere"})


# --- real MATH -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _real_math(math_dir: str):
    """Loaded once per session and split once (the math_dir fixture decides whether to skip)."""
    train = load_math_jsonl(f"{math_dir}/train.jsonl")
    test = load_math_jsonl(f"{math_dir}/test.jsonl")
    return train, test, split_problems(train, test, EASY, valid_size=500, seed=0)


@pytest.fixture
def real(math_dir):
    return _real_math(str(math_dir))


def test_real_math_counts(real):
    train, test, split = real
    assert len(train) == 12000 and len(test) == 500
    counts = split.summary["counts"]
    assert counts["test_easy"] == 238 and counts["test_hard"] == 262
    assert counts["valid"] == 500 and counts["test"] == 500
    assert split.summary["dropped"]["level is null"] == 2
    assert "also in test" not in split.summary["dropped"]  # train.jsonl and MATH500 do not overlap
    dropped = sum(split.summary["dropped"].values())
    assert len(split.train_easy) + len(split.train_hard) + 500 + dropped == len(train)


def test_real_math_valid_matches_math500_strata(real):
    _, test, split = real
    assert len(split.valid) == 500
    assert cells(split.valid) == cells(test)
    assert not {r["unique_id"] for r in split.valid} & {r["unique_id"] for r in split.train_easy + split.train_hard}


def test_real_math_null_level_rows_are_nowhere(real):
    train, _, split = real
    null_ids = {r["unique_id"] for r in train if r["level"] is None}
    assert len(null_ids) == 2
    placed = {r["unique_id"] for r in split.train_easy + split.train_hard + split.valid}
    assert not null_ids & placed


def test_real_math_hard_rows_carry_no_answer(real):
    _, _, split = real
    assert split.train_hard
    for r in split.train_hard + split.valid + split.test:
        assert set(r) == QUESTION_KEYS
    assert all(r["level"] in (4, 5) for r in split.train_hard)
    assert all(r["level"] in EASY and r["steps"] and r["answer"] for r in split.train_easy)


def test_hf_loader_normalises_the_hendrycks_schema(monkeypatch):
    """The hub loader's column handling, with datasets.load_dataset answered locally."""
    import datasets

    records = [
        {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "level": "Level 2", "type": "Algebra"},
        {"problem": "Find $x$.", "solution": "So $x=\\boxed{\\frac{1}{2}}$.", "level": "Level ?", "type": "Geometry"},
    ]
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(records)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = data.load_hf_math("someone/hendrycks_math", "train", "algebra")
    assert calls == [("someone/hendrycks_math", "algebra", "train")]
    assert rows[0] == {
        "problem": "What is $1+1$?",
        "solution": "It is $\\boxed{2}$.",
        "answer": "2",
        "subject": "Algebra",
        "level": 2,
        "unique_id": "someone/hendrycks_math/algebra/train/0",
    }
    assert rows[1]["level"] is None and rows[1]["answer"] == "\\frac{1}{2}"


def test_hf_source_concatenates_train_configs(monkeypatch):
    import datasets

    def fake_load_dataset(name, config=None, split=None):
        subject = config or "Test"
        level = 1 if split == "test" else 2
        return datasets.Dataset.from_list(
            [
                {
                    "problem": f"{subject} problem {i}",
                    "solution": f"$\\boxed{{{i}}}$",
                    "level": f"Level {level}",
                    "type": subject,
                }
                for i in range(3)
            ]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = {
        "source": "huggingface",
        "huggingface": {
            "train_name": "t",
            "train_config": ["a", "b"],
            "train_split": "train",
            "test_name": "m",
            "test_split": "test",
        },
    }
    train, test = data.load_source(cfg)
    assert [row["subject"] for row in train] == ["a"] * 3 + ["b"] * 3
    assert len({row["unique_id"] for row in train}) == 6 and len(test) == 3


# --- data.subset: a small fixed run on a large source ---------------------------------------------------


def test_stratified_subset_counts_subjects_in_turn_and_is_fixed():
    pool = [
        row(f"{subject[0]}{level}-{i}", level, subject)
        for level in (1, 2, 4)
        for subject in ("Algebra", "Geometry")
        for i in range(5)
    ] + [row("unlevelled", None)]
    chosen = data.stratified_subset(pool, [3, 2, 0, 1, 0], seed=0, field_name="data.subset.train_per_level")
    assert Counter(r["level"] for r in chosen) == {1: 3, 2: 2, 4: 1}
    assert cells(r for r in chosen if r["level"] == 2) == {("Algebra", 2): 1, ("Geometry", 2): 1}
    assert chosen == data.stratified_subset(list(reversed(pool)), [3, 2, 0, 1, 0], 0, "x")  # input order is irrelevant
    assert chosen != data.stratified_subset(pool, [3, 2, 0, 1, 0], 1, "x")
    with pytest.raises(
        DataError, match=r"'data.subset.test_per_level' asks for 11 level-1 problems, the source has 10"
    ):
        data.stratified_subset(pool, [11, 0, 0, 0, 0], 0, "data.subset.test_per_level")


def test_apply_subset_on_the_real_math_files(math_dir):
    train, test = load_math_jsonl(f"{math_dir}/train.jsonl"), load_math_jsonl(f"{math_dir}/test.jsonl")
    assert data.apply_subset(train, test, None) == (train, test)
    subset = {"train_per_level": [6, 6, 6, 3, 3], "test_per_level": [2, 2, 2, 2, 2], "seed": 0}
    small_train, small_test = data.apply_subset(train, test, subset)
    assert Counter(r["level"] for r in small_train) == {1: 6, 2: 6, 3: 6, 4: 3, 5: 3}
    assert Counter(r["level"] for r in small_test) == {level: 2 for level in range(1, 6)}
    assert len({r["subject"] for r in small_train if r["level"] == 1}) == 6  # six subjects, one problem each
    split = split_problems(small_train, small_test, EASY, valid_size=5, seed=0)
    assert split.summary["counts"]["valid"] == 5 and split.summary["counts"]["test"] == 10
