import numpy as np
import pytest

from easy2hard import metrics
from easy2hard.metrics import (
    accuracy_with_std,
    best_of_n,
    best_of_n_matrix,
    level_groups,
    maj_at_k_matrix,
    majority_vote,
    ns_for,
    subset_draw_scores,
    subset_indices,
    subset_score_matrix,
    weighted_vote_matrix,
)


# Single-question references for the dataset-wide matrices (the pipeline uses the matrices only).
def weighted_vote(clusters, correct, weights) -> float:
    """Weighted voting over one set of samples."""
    return float(metrics._weighted_scores(*(np.asarray(v).reshape(1, -1) for v in (clusters, correct, weights)))[0])


def maj_at_k_draws(clusters, correct, k: int, num_draws: int, seed: int, question_index: int = 0) -> np.ndarray:
    """Majority-vote score of one question for each of `num_draws` random size-k subsets."""
    return subset_draw_scores(metrics._majority_scores, [clusters, correct], k, num_draws, seed, question_index)


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


# --- weighted voting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clusters, correct, weights, expected",
    [
        # Majority picks cluster 0, the weights pick cluster 1 (0.9 > 0.1 + 0.1).
        ([0, 0, 1], [False, False, True], [0.1, 0.1, 0.9], 1.0),
        ([0, 0, 1], [True, True, False], [0.1, 0.1, 0.9], 0.0),
        # Many weak votes can still beat one strong one: 0.4 * 3 > 0.9.
        ([0, 0, 0, 1], [True, True, True, False], [0.4, 0.4, 0.4, 0.9], 1.0),
        ([0, 1], [True, False], [0.5, 0.5], 0.5),  # tie: expectation
        ([0, 0, 1, 2], [False, False, True, False], [0.3, 0.2, 0.5, 0.5], pytest.approx(1 / 3)),  # three-way tie
        # 0.1 + 0.2 is 0.30000000000000004 in floats: still a tie with 0.3.
        ([0, 0, 1], [True, True, False], [0.1, 0.2, 0.3], 0.5),
        ([-1, -1, -1], [False, False, False], [0.9, 0.9, 0.9], 0.0),  # no answer at all
        ([-1, 1], [False, True], [0.99, 0.01], 1.0),  # a missing answer never votes, however confident
        ([4], [True], [0.2], 1.0),  # one sample
        ([4], [False], [0.2], 0.0),
        ([0, 1, 1], [False, True, True], [0.0, 0.0, 0.0], 0.5),  # all weights zero: every answer ties
        ([0, 1, 1], [False, True, True], [0.3, 0.0, 0.0], 0.0),  # zero-weight votes add nothing
        ([0, 0, 1, 1], [False, False, False, False], [0.9, 0.1, 0.2, 0.3], 0.0),  # all wrong
    ],
)
def test_weighted_vote_hand_cases(clusters, correct, weights, expected):
    assert weighted_vote(clusters, correct, weights) == expected


def test_weighted_vote_with_uniform_weights_is_majority():
    rng = np.random.default_rng(4)
    for _ in range(200):
        clusters = rng.integers(-1, 4, size=7)
        correct = clusters == rng.integers(0, 4)
        assert weighted_vote(clusters, correct, np.full(7, 0.37)) == majority_vote(clusters, correct)


# --- best-of-N -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, correct, expected",
    [
        ([0.2, 0.8, 0.8, 0.1], [True, True, False, True], 0.5),  # tie on top: expectation
        ([0.0, 0.0], [False, True], 0.5),  # all scores zero: every sample ties
        ([0.9, 0.1], [False, False], 0.0),  # all wrong
        ([0.4], [True], 1.0),
    ],
)
def test_best_of_n_ties_and_edges(scores, correct, expected):
    assert best_of_n(scores, correct) == expected


# --- the shared subsets ----------------------------------------------------------------------------


@pytest.fixture
def dataset():
    rng = np.random.default_rng(2)
    clusters = rng.integers(-1, 4, size=(12, 8))
    correct = clusters == 1
    return clusters, correct


@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_majority_and_uniform_weighted_vote_are_identical(dataset, k):
    clusters, correct = dataset
    majority = maj_at_k_matrix(clusters, correct, k, num_draws=30, seed=9)
    weighted = weighted_vote_matrix(clusters, correct, np.ones(clusters.shape), k, num_draws=30, seed=9)
    np.testing.assert_array_equal(majority, weighted)


def test_best_of_n_with_a_one_hot_score_picks_that_sample(dataset):
    clusters, correct = dataset
    chosen = 3
    one_hot = np.zeros(clusters.shape)
    one_hot[:, chosen] = 1.0
    matrix = best_of_n_matrix(one_hot, correct, 8, num_draws=30, seed=9)
    np.testing.assert_array_equal(matrix[:, 0], correct[:, chosen])
    # With subsets: whenever a subset holds the chosen sample, its correctness is the score.
    subsets = [subset_indices(8, 4, 30, np.random.default_rng([9, i])) for i in range(len(correct))]
    matrix = best_of_n_matrix(one_hot, correct, 4, num_draws=30, seed=9)
    for i, draws in enumerate(subsets):
        for j, subset in enumerate(draws):
            if chosen in subset:
                assert matrix[i, j] == correct[i, chosen]


def test_every_method_sees_the_same_subsets(dataset):
    """The generic helper hands each method the same (question, draw) subsets: recording them
    through a scoring function reproduces subset_indices with default_rng([seed, question])."""
    clusters, _ = dataset
    seen = []

    def record(indices):
        seen.append(indices.copy())
        return np.zeros(len(indices))

    positions = np.tile(np.arange(8), (len(clusters), 1))
    subset_score_matrix(record, [positions], 3, num_draws=7, seed=5)
    (rows,) = seen  # every question's draws are scored in one call, question by question
    for i, indices in enumerate(rows.reshape(len(clusters), 7, 3)):
        np.testing.assert_array_equal(indices, subset_indices(8, 3, 7, np.random.default_rng([5, i])))


def test_weighted_vote_matrix_per_draw(dataset):
    clusters, correct = dataset
    weights = np.random.default_rng(1).random(clusters.shape)
    matrix = weighted_vote_matrix(clusters, correct, weights, 3, num_draws=10, seed=2)
    assert matrix.shape == (12, 10)
    for i in range(len(clusters)):
        for j, subset in enumerate(subset_indices(8, 3, 10, np.random.default_rng([2, i]))):
            assert matrix[i, j] == pytest.approx(
                weighted_vote(clusters[i][subset], correct[i][subset], weights[i][subset])
            )
    assert weighted_vote_matrix(clusters, correct, weights, 8, num_draws=10, seed=2).shape == (12, 1)


def test_all_methods_agree_at_one_sample(dataset):
    """With one sample every method scores that sample's correctness (no answer: 0)."""
    clusters, correct = dataset
    scores = np.random.default_rng(3).random(clusters.shape)
    majority = maj_at_k_matrix(clusters, correct, 1, num_draws=25, seed=0)
    np.testing.assert_array_equal(majority, weighted_vote_matrix(clusters, correct, scores, 1, 25, seed=0))
    np.testing.assert_array_equal(majority, best_of_n_matrix(scores, correct, 1, 25, seed=0))


def test_subset_helpers_reject_mismatched_arrays():
    with pytest.raises(ValueError):
        subset_draw_scores(lambda a, b: a[:, 0], [np.zeros(4), np.zeros(5)], 2, 3, seed=0)
    with pytest.raises(ValueError):
        subset_score_matrix(lambda a, b: a[:, 0], [np.zeros((2, 4)), np.zeros((3, 4))], 2, 3, seed=0)


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


# --- paired bootstrap over problems -------------------------------------------------------------


def test_identical_methods_differ_by_exactly_zero():
    from easy2hard.metrics import bootstrap_indices, paired_difference

    scores = np.random.default_rng(0).random(40)
    indices = bootstrap_indices(40, 1000, seed=0)
    assert paired_difference(scores, scores.copy(), indices) == (0.0, 0.0, 0.0)


def test_a_method_that_wins_every_problem_has_a_ci_above_zero():
    from easy2hard.metrics import bootstrap_indices, paired_difference

    rng = np.random.default_rng(1)
    worse = rng.random(30) * 0.5
    better = worse + 0.1 + rng.random(30) * 0.4
    difference, low, high = paired_difference(better, worse, bootstrap_indices(30, 1000, seed=3))
    assert 0 < low <= difference <= high
    # The other way round, the CI lies below zero; it is the mirror image.
    assert paired_difference(worse, better, bootstrap_indices(30, 1000, seed=3)) == pytest.approx(
        (-difference, -high, -low)
    )


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_more_problems():
    from easy2hard.metrics import bootstrap_ci, bootstrap_indices

    rng = np.random.default_rng(2)
    small, large = rng.random(25) < 0.3, rng.random(2500) < 0.3
    low, high = bootstrap_ci(small, bootstrap_indices(25, 1000, seed=0))
    assert low <= small.mean() <= high
    large_low, large_high = bootstrap_ci(large, bootstrap_indices(2500, 1000, seed=0))
    assert large_high - large_low < (high - low) / 4
    # About ±1.96 standard errors for a mean of 0/1 scores.
    stderr = np.sqrt(large.mean() * (1 - large.mean()) / 2500)
    assert large_high - large_low == pytest.approx(2 * 1.96 * stderr, rel=0.15)
    # Constant scores have a zero-width interval.
    assert bootstrap_ci(np.ones(10), bootstrap_indices(10, 200, seed=0)) == (1.0, 1.0)


def test_bootstrap_indices_are_a_function_of_seed_key_and_size():
    from easy2hard.metrics import bootstrap_indices

    a = bootstrap_indices(50, 100, seed=0, key="easy")
    assert a.shape == (100, 50) and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, bootstrap_indices(50, 100, seed=0, key="easy"))
    assert not np.array_equal(a, bootstrap_indices(50, 100, seed=0, key="hard"))
    assert not np.array_equal(a, bootstrap_indices(50, 100, seed=1, key="easy"))
    with pytest.raises(ValueError):
        bootstrap_indices(0, 100, seed=0)
