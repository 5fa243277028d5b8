"""Evaluator metrics: step aggregation, best-of-N (same subsets as maj@k), ROC AUC, and the
evaluator quality report on a hand-computed fixture."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easy2hard import evaluator_report, metrics
from easy2hard.io import DataError, read_jsonl, write_jsonl
from easy2hard.metrics import aggregate_steps, best_of_n, best_of_n_matrix, roc_auc

# --- aggregate_steps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how, expected", [("min", 0.5), ("prod", 0.36), ("last", 0.8), ("mean", 2.2 / 3)])
def test_aggregate_steps_hand_values(how, expected):
    assert aggregate_steps([0.9, 0.5, 0.8], how) == pytest.approx(expected)
    assert aggregate_steps([0.25], how) == pytest.approx(0.25)


@pytest.mark.parametrize("how", metrics.AGGREGATIONS)
def test_aggregate_steps_empty_is_zero(how):
    assert aggregate_steps([], how) == 0.0


def test_aggregate_steps_unknown():
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate_steps([0.1, 0.2], "max")


# --- best-of-N --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, correct, expected",
    [
        ([0.1, 0.9, 0.3], [False, True, False], 1.0),
        ([0.1, 0.9, 0.3], [True, False, True], 0.0),
        ([0.9, 0.9, 0.1], [True, False, True], 0.5),  # tie on top: expectation
        ([0.7, 0.7, 0.7, 0.2], [True, False, False, True], pytest.approx(1 / 3)),
        ([0.4, 0.4, 0.4], [True, True, False], pytest.approx(2 / 3)),  # all tied: pass@1
        ([0.3], [True], 1.0),
    ],
)
def test_best_of_n_hand_cases(scores, correct, expected):
    assert best_of_n(scores, correct) == expected


@pytest.fixture
def random_questions():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(30, 8)) / 4  # coarse, so ties happen
    correct = rng.random((30, 8)) < 0.4
    clusters = rng.integers(-1, 3, size=(30, 8))
    return scores, correct, clusters


def test_best_of_n_matrix_k_equals_n(random_questions):
    scores, correct, _ = random_questions
    matrix = best_of_n_matrix(scores, correct, k=8, num_draws=5, seed=3)
    assert matrix.shape == (30, 1)
    assert matrix[:, 0] == pytest.approx([best_of_n(s, c) for s, c in zip(scores, correct)])


def test_best_of_one_approaches_pass_at_one(random_questions):
    scores, correct, _ = random_questions
    matrix = best_of_n_matrix(scores, correct, k=1, num_draws=4000, seed=0)
    assert matrix.shape == (30, 4000)
    assert set(np.unique(matrix)) <= {0.0, 1.0}
    assert matrix.mean(axis=1) == pytest.approx(correct.mean(axis=1), abs=0.05)
    assert matrix.mean() == pytest.approx(correct.mean(), abs=0.01)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_best_of_n_uses_the_subsets_of_maj_at_k(random_questions, k):
    scores, correct, clusters = random_questions
    seed, draws = 11, 6
    best = best_of_n_matrix(scores, correct, k=k, num_draws=draws, seed=seed)
    majority = metrics.maj_at_k_matrix(clusters, correct, k=k, num_draws=draws, seed=seed)
    assert best.shape == majority.shape == (30, draws)
    for i in range(len(scores)):
        subsets = metrics.subset_indices(8, k, draws, np.random.default_rng([seed, i]))
        for j, subset in enumerate(subsets):
            assert best[i, j] == pytest.approx(best_of_n(scores[i][subset], correct[i][subset]))
            assert majority[i, j] == pytest.approx(metrics.majority_vote(clusters[i][subset], correct[i][subset]))
    # Another seed draws other subsets.
    assert not np.array_equal(best, best_of_n_matrix(scores, correct, k=k, num_draws=draws, seed=seed + 1))


# --- ROC AUC ----------------------------------------------------------------------------------------------


def brute_force_auc(scores, labels):
    positives = [s for s, positive in zip(scores, labels) if positive]
    negatives = [s for s, positive in zip(scores, labels) if not positive]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40))
def test_roc_auc_matches_pairwise_count(pairs):
    scores = [s / 6 for s, _ in pairs]
    labels = [label for _, label in pairs]
    if all(labels) or not any(labels):
        assert roc_auc(scores, labels) is None
    else:
        assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_roc_auc_random_continuous():
    rng = np.random.default_rng(5)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + 0.3 * labels, 2)  # informative, with ties
    auc = roc_auc(scores, labels)
    assert auc == pytest.approx(brute_force_auc(scores.tolist(), labels.tolist()))
    assert 0.6 < auc < 1.0


def test_roc_auc_edge_cases():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert roc_auc([0.5] * 5, [True, False, True, False, False]) == 0.5
    assert roc_auc([0.1, 0.9], [True, True]) is None
    assert roc_auc([0.1, 0.9], [False, False]) is None
    assert roc_auc([], []) is None


# --- evaluator quality report --------------------------------------------------------------------------

# Three questions x three samples: a (level 1) and b (level 2) are easy, c (level 5) is hard.
FIXTURE = {
    "a": (1, [True, False, False], [0, 1, 1], [[0.9, 0.8], [0.2, 0.7], [0.6, 0.4]]),
    "b": (2, [False, True, True], [0, 1, 1], [[0.3], [0.5, 0.9], [0.95, 0.1]]),
    "c": (5, [False, False, True], [0, 0, 1], [[0.7, 0.7], [0.1], [0.8, 0.6, 0.9]]),
}


@pytest.fixture
def report_files(tmp_path):
    graded, prm, flat = [], [], []
    for unique_id, (level, correct, clusters, step_scores) in FIXTURE.items():
        for index in range(3):
            graded.append(
                {
                    "unique_id": unique_id,
                    "sample_index": index,
                    "level": level,
                    "subject": "Algebra",
                    "answer": str(clusters[index]),
                    "correct": correct[index],
                    "answer_cluster": clusters[index],
                    "completion": "...",
                }
            )
            prm.append({"unique_id": unique_id, "sample_index": index, "step_scores": step_scores[index]})
            flat.append({"unique_id": unique_id, "sample_index": index, "step_scores": [0.5, 0.5]})
    # Out of order on disk, questions interleaved: the join is by (unique_id, sample_index).
    order = [4, 0, 8, 2, 6, 1, 7, 3, 5]
    write_jsonl(tmp_path / "valid.jsonl", [graded[i] for i in order])
    write_jsonl(tmp_path / "prm.jsonl", prm[3:] + prm[:3])
    write_jsonl(tmp_path / "flat.jsonl", flat)
    return tmp_path


def quality(folder):
    samples, grids = evaluator_report.load_inputs(
        folder / "valid.jsonl", {"prm": folder / "prm.jsonl", "flat": folder / "flat.jsonl"}
    )
    return evaluator_report.evaluator_quality(samples, grids, [1, 2, 3])


def cell(df, evaluator, aggregation, levels, column):
    rows = df[(df["evaluator"] == evaluator) & (df["aggregation"] == aggregation) & (df["levels"] == levels)]
    assert len(rows) == 1
    return rows.iloc[0][column]


def test_evaluator_quality_hand_computed(report_files):
    df = quality(report_files)
    assert list(df.columns) == evaluator_report.COLUMNS
    # min-aggregated scores: a [0.8, 0.2, 0.4], b [0.3, 0.5, 0.1], c [0.7, 0.1, 0.6].
    # easy: positives {0.8, 0.5, 0.1} vs negatives {0.2, 0.4, 0.3}: 6 of 9 pairs.
    assert cell(df, "prm", "min", "easy", "auc") == pytest.approx(6 / 9)
    assert cell(df, "prm", "min", "hard", "auc") == pytest.approx(1 / 2)  # 0.6 vs {0.7, 0.1}
    # all: 13 wins and one tie (0.1 vs 0.1) of 20 pairs.
    assert cell(df, "prm", "min", "all", "auc") == pytest.approx(13.5 / 20)
    # Best-of-3 by the minimum picks a0 (right), b1 (right), c0 (wrong).
    assert cell(df, "prm", "min", "easy", "best_of_n") == pytest.approx(1.0)
    assert cell(df, "prm", "min", "hard", "best_of_n") == pytest.approx(0.0)
    assert cell(df, "prm", "min", "all", "best_of_n") == pytest.approx(2 / 3)
    # By the last unit it picks a0, b1 and c2: all right.
    assert cell(df, "prm", "last", "all", "best_of_n") == pytest.approx(1.0)
    # Threshold 0.5 on the easy min scores: right except b2 (0.1, correct).
    assert cell(df, "prm", "min", "easy", "threshold_accuracy") == pytest.approx(5 / 6)
    assert cell(df, "prm", "min", "level_1", "best_of_n") == pytest.approx(1.0)
    assert cell(df, "prm", "min", "easy", "n") == 3
    assert cell(df, "prm", "min", "easy", "num_problems") == 2
    assert cell(df, "prm", "min", "all", "num_samples") == 9
    # A flat evaluator ties everything: AUC 0.5, best-of-N = the average sample.
    assert cell(df, "flat", "prod", "all", "auc") == pytest.approx(0.5)
    assert cell(df, "flat", "min", "easy", "best_of_n") == pytest.approx(0.5)
    # References: majority voting picks cluster 1 in a (wrong) and b (right), cluster 0 in c (wrong).
    assert cell(df, "majority", "-", "easy", "best_of_n") == pytest.approx(0.5)
    assert cell(df, "majority", "-", "hard", "best_of_n") == pytest.approx(0.0)
    assert cell(df, "majority", "-", "all", "best_of_n") == pytest.approx(1 / 3)
    assert cell(df, "pass@1", "-", "easy", "best_of_n") == pytest.approx(0.5)
    assert cell(df, "pass@1", "-", "hard", "best_of_n") == pytest.approx(1 / 3)
    assert cell(df, "pass@1", "-", "all", "best_of_n") == pytest.approx(4 / 9)
    assert df[df["evaluator"] == "majority"]["auc"].isna().all()
    # Levels with no question (3 and 4) have no rows.
    assert not set(df["levels"]) & {"level_3", "level_4"}
    # 2 evaluators x 4 aggregations per group, plus 2 references; groups easy, hard, all, level_1, 2, 5.
    assert len(df) == 6 * (2 * 4 + 2)


def test_missing_score_row_raises(report_files):
    rows = [r for r in read_jsonl(report_files / "prm.jsonl") if (r["unique_id"], r["sample_index"]) != ("b", 2)]
    write_jsonl(report_files / "prm.jsonl", rows)
    with pytest.raises(DataError, match="no scores for b sample 2"):
        evaluator_report.load_inputs(report_files / "valid.jsonl", {"prm": report_files / "prm.jsonl"})


def test_render_markdown_tables(report_files):
    markdown = evaluator_report.render_markdown(quality(report_files), {"prm": "min", "flat": "last"})
    assert "## AUC: telling correct from incorrect final answers" in markdown
    assert "| evaluator | aggregation | easy | hard | all |" in markdown
    assert "| prm | min * | 0.667 | 0.500 | 0.675 |" in markdown
    assert "## Best-of-3 accuracy (%)" in markdown
    assert "| prm | min * | 100.0 | 0.0 | 66.7 |" in markdown
    assert "| prm | last | 100.0 | 100.0 | 100.0 |" in markdown
    assert "| flat | last * |" in markdown and "| flat | min |" in markdown
    assert "| majority | - | 50.0 | 0.0 | 33.3 |" in markdown
    assert "| pass@1 | - | 50.0 | 33.3 | 44.4 |" in markdown
    auc_table = markdown.split("## Best-of")[0]
    assert "majority" not in auc_table and "pass@1" not in auc_table
    assert "Problems: easy 2, hard 1, all 3" in markdown
    assert "Step aggregation of each evaluator in the pipeline (marked *): prm min, flat last." in markdown


def test_write_report(report_files):
    df = quality(report_files)
    evaluator_report.write(
        df,
        report_files / "out" / "evaluators.csv",
        report_files / "out" / "evaluators.md",
        {"prm": "min", "flat": "min"},
    )
    import pandas as pd

    back = pd.read_csv(report_files / "out" / "evaluators.csv")
    assert list(back.columns) == evaluator_report.COLUMNS
    assert len(back) == len(df)
    assert (report_files / "out" / "evaluators.md").read_text().startswith("# Evaluator quality (validation)")


def test_truncated_or_answerless_samples_never_win_best_of_n(report_files):
    """b1 wins best-of-3 by its min score; truncated, or without an answer, it ranks last."""
    samples, grids = evaluator_report.load_inputs(report_files / "valid.jsonl", {"prm": report_files / "prm.jsonl"})
    assert cell(evaluator_report.evaluator_quality(samples, grids, [1, 2, 3]), "prm", "min", "easy", "best_of_n") == 1.0
    for change in ({"finished": False}, {"answer": None, "answer_cluster": -1, "correct": False}):
        rows = read_jsonl(report_files / "valid.jsonl")
        for row in rows:
            if (row["unique_id"], row["sample_index"]) == ("b", 1):
                row.update(change)
        write_jsonl(report_files / "valid.jsonl", rows)
        samples, grids = evaluator_report.load_inputs(report_files / "valid.jsonl", {"prm": report_files / "prm.jsonl"})
        # b now picks b0 (0.3, wrong) over b1 and b2 (0.1): easy best-of-3 drops from 1 to 0.5
        assert cell(
            evaluator_report.evaluator_quality(samples, grids, [1, 2, 3]), "prm", "min", "easy", "best_of_n"
        ) == pytest.approx(0.5)


def test_selection_scores_and_aggregation_for():
    ranked, weights = metrics.selection_scores([[0.9, 0.2], [0.4, 0.7]], [[False, True], [True, True]])
    assert ranked.tolist() == [[metrics.LOWEST_SCORE, 0.2], [0.4, 0.7]] and weights.tolist() == [[0.0, 0.2], [0.4, 0.7]]
    aggregations = {"prm": "min", "orm": "last", "oprm": "min"}
    assert metrics.aggregation_for(aggregations, "orm") == "last"
    assert metrics.aggregation_for(aggregations, "orm_full") == "last"
    with pytest.raises(ValueError, match="no step aggregation for evaluator 'flat'"):
        metrics.aggregation_for(aggregations, "flat")


def test_unknown_aggregation_raises_even_without_scores():
    with pytest.raises(ValueError):
        metrics.aggregate_steps([], "bogus")
