import numpy as np
import pytest

from easy2hard.metrics import (
    accuracy_with_std,
    level_groups,
    maj_at_k_draws,
    maj_at_k_matrix,
    majority_vote,
    ns_for,
    subset_indices,
)


# --- majority_vote -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clusters, correct, expected",
    [
        ([0, 0, 1], [True, True, False], 1.0),  # clear winner, correct
        ([0, 1, 1], [True, False, False], 0.0),  # clear winner, incorrect
        ([0, 1], [True, False], 0.5),  # two-way tie, one correct
        ([0, 0, 1, 1, 2], [False, False, True, True, False], 0.5),  # tie between the top two only
        ([0, 1, 2], [True, False, False], pytest.approx(1 / 3)),  # three-way tie
        ([-1, -1, -1], [False, False, False], 0.0),  # no answer extracted
        ([3], [True], 1.0),  # one sample
        ([3], [False], 0.0),
        ([-1, -1, 2], [False, False, True], 1.0),  # missing answers never vote
        ([-1, -1, -1, 5, 5, 7], [False, False, False, False, False, True], 0.0),
    ],
)
def test_majority_vote_hand_cases(clusters, correct, expected):
    assert majority_vote(clusters, correct) == expected


def test_majority_vote_ignores_sample_order():
    clusters, correct = [4, 9, 9, 4, 1], [True, False, False, True, False]
    assert majority_vote(clusters, correct) == majority_vote(clusters[::-1], correct[::-1]) == 0.5


# --- subset_indices ----------------------------------------------------------------------------


def test_subset_indices_are_subsets_without_repeats():
    draws = subset_indices(10, 4, 200, np.random.default_rng(0))
    assert draws.shape == (200, 4)
    assert all(len(set(row)) == 4 for row in draws.tolist())
    assert draws.min() >= 0 and draws.max() <= 9


def test_subset_indices_full_set_is_one_draw():
    draws = subset_indices(8, 8, 100, np.random.default_rng(0))
    assert draws.tolist() == [list(range(8))]


def test_subset_indices_reproducible_and_seed_dependent():
    first = subset_indices(32, 4, 50, np.random.default_rng(7))
    again = subset_indices(32, 4, 50, np.random.default_rng(7))
    other = subset_indices(32, 4, 50, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("k", [0, 11])
def test_subset_indices_rejects_bad_k(k):
    with pytest.raises(ValueError):
        subset_indices(10, k, 5, np.random.default_rng(0))


# --- maj@k -------------------------------------------------------------------------------------


def test_maj_at_1_is_fraction_correct_in_expectation():
    # 16 samples, 5 correct; a single random sample is right with probability 5/16.
    clusters = np.array([0] * 5 + [1] * 6 + [2] * 3 + [-1] * 2)
    correct = clusters == 0
    scores = maj_at_k_draws(clusters, correct, k=1, num_draws=20_000, seed=0)
    assert scores.shape == (20_000,)
    assert scores.mean() == pytest.approx(5 / 16, abs=0.01)


def test_maj_at_n_is_the_full_vote():
    clusters = np.array([0, 0, 1, 1, 1, 2, -1, 0])
    correct = clusters == 0
    scores = maj_at_k_draws(clusters, correct, k=8, num_draws=100, seed=3)
    assert scores.tolist() == [majority_vote(clusters, correct)] == [0.5]


def test_maj_at_k_draws_depend_on_seed_and_question_index():
    clusters = np.arange(12) % 4
    correct = clusters == 1
    base = maj_at_k_draws(clusters, correct, 3, 50, seed=0, question_index=2)
    np.testing.assert_array_equal(base, maj_at_k_draws(clusters, correct, 3, 50, seed=0, question_index=2))
    assert not np.array_equal(base, maj_at_k_draws(clusters, correct, 3, 50, seed=1, question_index=2))
    assert not np.array_equal(base, maj_at_k_draws(clusters, correct, 3, 50, seed=0, question_index=3))


def test_maj_at_k_matrix_stacks_questions():
    rng = np.random.default_rng(1)
    clusters = rng.integers(-1, 3, size=(6, 8))
    correct = clusters == 0
    matrix = maj_at_k_matrix(clusters, correct, 3, 25, seed=5)
    assert matrix.shape == (6, 25)
    np.testing.assert_array_equal(matrix[4], maj_at_k_draws(clusters[4], correct[4], 3, 25, 5, question_index=4))
    assert maj_at_k_matrix(clusters, correct, 8, 25, seed=5).shape == (6, 1)


# --- accuracy, groups, ns ----------------------------------------------------------------------


def test_accuracy_with_std():
    # Two draws over three questions: accuracies 2/3 and 1/3.
    mean, std, count = accuracy_with_std([[1, 0], [1, 1], [0, 0]])
    assert (mean, count) == (pytest.approx(0.5), 3)
    assert std == pytest.approx(1 / 6)
    assert accuracy_with_std([[1.0], [0.0]]) == (0.5, 0.0, 2)


def test_level_groups():
    groups = level_groups([1, 2, 3])
    assert groups["easy"] == {1, 2, 3}
    assert groups["hard"] == {4, 5}
    assert groups["all"] == {1, 2, 3, 4, 5}
    assert [groups[f"level_{level}"] for level in range(1, 6)] == [{1}, {2}, {3}, {4}, {5}]
    with pytest.raises(ValueError):
        level_groups([0, 1])


@pytest.mark.parametrize(
    "num_samples, expected",
    [(1, [1]), (2, [1, 2]), (5, [1, 2, 4, 5]), (32, [1, 2, 4, 8, 16, 32]), (48, [1, 2, 4, 8, 16, 32, 48])],
)
def test_ns_for(num_samples, expected):
    assert ns_for(num_samples) == expected
