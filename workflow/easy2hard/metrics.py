"""Scoring of sampled solutions: majority voting, evaluator-weighted voting and best-of-N over
random subsets of the samples (numpy only).

A question's samples are described by parallel arrays: ``clusters`` (the id of the equivalence
class of each sample's answer, ids are per question, -1 = no answer extracted), ``correct``
(whether each sample's answer is right) and, for the evaluator methods, one score per sample.

Conventions shared by every method:

* Ties are broken by expectation: when several answers (voting) or samples (best-of-N) tie for
  the top, the score is the fraction of them that are correct, i.e. the expected score of
  picking one uniformly at random. Averaged curves therefore do not depend on sample order.
* Samples without an answer (cluster -1) never vote; a set without any valid answer scores 0.
* The random subsets come from one helper (`subset_score_matrix`): question i draws from
  ``default_rng([seed, i])``, so for the same seed every method and every generator sees
  exactly the same size-k subsets and their curves differ only by the method.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

NO_ANSWER = -1
LEVELS = (1, 2, 3, 4, 5)
# Weighted votes are sums of floats: totals equal up to rounding are a tie, not a win.
TIE_RTOL = 1e-9

# A per-draw scoring function: (draws, k) arrays, one per input, -> (draws,) scores.
DrawScorer = Callable[..., np.ndarray]


# ---------------------------------------------------------------------------------------------
# Random subsets, shared by every method


def subset_indices(num_samples: int, k: int, num_draws: int, rng: np.random.Generator) -> np.ndarray:
    """`num_draws` random size-k subsets of range(num_samples) without replacement, shape (draws, k).

    With k == num_samples every draw is the full set, so a single draw is returned, shape (1, k).
    """
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must be in 1..{num_samples}, got {k}")
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    if k == num_samples:
        return np.arange(num_samples)[None, :]
    # The first k of a random permutation; argsort of uniforms permutes every row at once.
    return np.argsort(rng.random((num_draws, num_samples)), axis=1)[:, :k]


def subset_draw_scores(
    score_draws: DrawScorer, rows: Sequence, k: int, num_draws: int, seed: int, question_index: int = 0
) -> np.ndarray:
    """Scores of one question for each of `num_draws` random size-k subsets of its samples.

    `rows` are the question's per-sample arrays (e.g. clusters and correct), all of length N;
    `score_draws` receives each of them indexed by the (draws, k) subsets. The subsets depend only
    on (seed, question_index) and k, and draw j takes the first k samples of the same permutation
    for every k, so subsets are nested across k. One score when k equals N (one subset).
    """
    rows = [np.asarray(row) for row in rows]
    if any(row.ndim != 1 or row.shape != rows[0].shape for row in rows):
        raise ValueError("per-sample arrays must be 1-D and of the same length")
    rng = np.random.default_rng([seed, question_index])
    draws = subset_indices(len(rows[0]), k, num_draws, rng)
    return score_draws(*(row[draws] for row in rows))


def subset_score_matrix(score_draws: DrawScorer, arrays: Sequence, k: int, num_draws: int, seed: int) -> np.ndarray:
    """Scores of a dataset, shape (num_questions, num_draws), or (num_questions, 1) for k = N.

    `arrays` are (num_questions, N) per-sample arrays; row i is scored with question_index=i, so
    column j is one "run" of the method over the whole dataset, on the same subsets for every
    method given the same seed. The subsets are exactly those of `subset_draw_scores`, drawn once
    per (questions, N, draws, seed) and scored for all questions in one call.
    """
    arrays = [np.asarray(array) for array in arrays]
    if any(array.ndim != 2 or array.shape != arrays[0].shape for array in arrays):
        raise ValueError("per-sample arrays must be (questions, samples) and of the same shape")
    num_questions, num_samples = arrays[0].shape
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must be in 1..{num_samples}, got {k}")
    if k == num_samples:
        return np.asarray(score_draws(*arrays), dtype=float).reshape(num_questions, 1)
    chosen = _permutations(num_questions, num_samples, num_draws, seed)[:, :, :k]  # (questions, draws, k)
    rows = np.arange(num_questions)[:, None, None]
    picked = [array[rows, chosen].reshape(num_questions * num_draws, k) for array in arrays]
    return np.asarray(score_draws(*picked), dtype=float).reshape(num_questions, num_draws)


@functools.lru_cache(maxsize=16)
def _permutations(num_questions: int, num_samples: int, num_draws: int, seed: int) -> np.ndarray:
    """(questions, draws, N): question i's permutations from default_rng([seed, i]), as `subset_indices`
    draws them (its size-k subsets are their first k entries). Read-only."""
    permutations = np.stack(
        [
            np.argsort(np.random.default_rng([seed, index]).random((num_draws, num_samples)), axis=1)
            for index in range(num_questions)
        ]
    )
    permutations.setflags(write=False)
    return permutations


# ---------------------------------------------------------------------------------------------
# Voting


def majority_vote(clusters, correct) -> float:
    """Score of majority voting over one set of samples, in [0, 1]: the most frequent answer
    cluster wins (ties by expectation, -1 never votes, no valid answer scores 0)."""
    clusters, correct = _one_row(clusters), _one_row(correct)
    return float(_majority_scores(clusters, correct)[0])


def maj_at_k_matrix(clusters, correct, k: int, num_draws: int, seed: int) -> np.ndarray:
    """maj@k scores of a dataset, shape (num_questions, num_draws), or (num_questions, 1) for k = N."""
    return subset_score_matrix(_majority_scores, [clusters, correct], k, num_draws, seed)


def weighted_vote_matrix(clusters, correct, weights, k: int, num_draws: int, seed: int) -> np.ndarray:
    """Weighted-vote@k scores of a dataset on the subsets of `maj_at_k_matrix` (same seed)."""
    return subset_score_matrix(_weighted_scores, [clusters, correct, weights], k, num_draws, seed)


def _one_row(values) -> np.ndarray:
    return np.asarray(values).reshape(1, -1)


def _majority_scores(clusters: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Majority voting is weighted voting with every weight 1."""
    return _weighted_scores(clusters, correct, np.ones(clusters.shape))


def _weighted_scores(clusters: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted-vote score of every row of (draws, k) cluster ids, correctness flags and weights:
    the answer cluster with the largest sum of its samples' weights (evaluator scores) wins. Ties
    by expectation; samples without an answer never vote. A cluster with zero total weight can
    only win when every answered cluster has zero weight (then all of them tie)."""
    num_rows = clusters.shape[0]
    valid = clusters != NO_ANSWER
    if not valid.any():
        return np.zeros(num_rows)
    # Dense cluster ids 0..C-1 let one bincount per quantity handle all rows at once.
    ids, dense = np.unique(clusters, return_inverse=True)
    num_clusters = len(ids)
    slots = (np.arange(num_rows)[:, None] * num_clusters + dense.reshape(clusters.shape))[valid]

    def per_cluster(values) -> np.ndarray:
        totals = np.bincount(slots, weights=np.asarray(values, dtype=float)[valid], minlength=num_rows * num_clusters)
        return totals.reshape(num_rows, num_clusters)

    members = per_cluster(np.ones(clusters.shape))
    present = members > 0
    totals = np.where(present, per_cluster(weights), -np.inf)
    # A cluster's correctness is the mean over its samples (all equal for consistent data).
    cluster_correct = np.divide(per_cluster(correct), members, out=np.zeros(members.shape), where=present)
    top = totals.max(axis=1, keepdims=True)
    winners = present & np.isclose(totals, top, rtol=TIE_RTOL, atol=0.0)
    num_winners = winners.sum(axis=1)
    scores = (winners * cluster_correct).sum(axis=1)
    return np.divide(scores, num_winners, out=np.zeros(num_rows), where=num_winners > 0)


# ---------------------------------------------------------------------------------------------
# Accuracy over draws, level groups, sample counts


def accuracy_with_std(score_matrix) -> tuple[float, float, int]:
    """(mean, std, num_problems) of a (num_questions, num_draws) score matrix.

    Each draw gives one dataset accuracy (mean over questions); the result is the mean and the
    population std of those accuracies across draws (the paper's shaded band), 0 for one draw.
    """
    scores = np.asarray(score_matrix, dtype=float)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"need a non-empty (questions, draws) matrix, got shape {scores.shape}")
    per_draw = scores.mean(axis=0)
    return float(per_draw.mean()), float(per_draw.std()), scores.shape[0]


def level_groups(easy_levels, levels=LEVELS) -> dict[str, set[int]]:
    """Named groups of difficulty levels: easy, hard (the rest), all, and level_1 ... level_5."""
    easy = set(easy_levels)
    if not easy <= set(levels):
        raise ValueError(f"easy levels {sorted(easy)} are not all among {list(levels)}")
    groups = {"easy": easy, "hard": set(levels) - easy, "all": set(levels)}
    groups.update({f"level_{level}": {level} for level in levels})
    return groups


def ns_for(num_samples: int) -> list[int]:
    """Sample counts for the maj@n curve: 1, 2, 4, ... below N, then N itself."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    ns, n = [], 1
    while n < num_samples:
        ns.append(n)
        n *= 2
    return ns + [num_samples]


# ---------------------------------------------------------------------------------------------
# Evaluator scores: step aggregation, best-of-N, AUC

AGGREGATIONS = ("min", "prod", "last", "mean")
# Below every probability: a truncated solution or one without an answer section never wins
# best-of-N on its step scores alone (the authors' code scores such an answer unit -5).
LOWEST_SCORE = -1.0


def aggregation_for(aggregations: dict[str, str], evaluator: str) -> str:
    """An evaluator's step aggregation: its own entry, else its kind's (``prm_full`` -> ``prm``)."""
    kind = evaluator if evaluator in aggregations else evaluator.removesuffix("_full")
    if kind not in aggregations:
        raise ValueError(f"no step aggregation for evaluator {evaluator!r} (configured: {sorted(aggregations)})")
    return aggregations[kind]


def selection_scores(scores, valid) -> tuple[np.ndarray, np.ndarray]:
    """(best-of-N scores, weighted-vote weights) of aggregated solution scores: a sample that is
    not `valid` (truncated, or without an answer) ranks last (LOWEST_SCORE) and weighs nothing."""
    scores, valid = np.asarray(scores, dtype=float), np.asarray(valid, dtype=bool)
    return np.where(valid, scores, LOWEST_SCORE), np.where(valid, scores, 0.0)


def aggregate_steps(step_scores, how: str) -> float:
    """One solution score from its per-unit scores (steps, then answer); 0.0 for no units."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r} (one of {', '.join(AGGREGATIONS)})")
    scores = np.asarray(step_scores, dtype=float)
    if scores.size == 0:
        return 0.0
    if how == "min":
        return float(scores.min())
    if how == "prod":
        return float(scores.prod())
    if how == "last":
        return float(scores[-1])
    return float(scores.mean())


def _best_scores(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Best-of-k score of every row of (draws, k): the top-scored sample's correctness, ties
    broken by expectation (fraction of the tied top samples that are correct)."""
    top = scores == scores.max(axis=1, keepdims=True)
    return (top * correct).sum(axis=1) / top.sum(axis=1)


def best_of_n(scores, correct) -> float:
    """Best-of-N over one question's samples."""
    return float(_best_scores(np.asarray(scores, float)[None, :], np.asarray(correct, float)[None, :])[0])


def best_of_n_matrix(scores, correct, k: int, num_draws: int, seed: int) -> np.ndarray:
    """best-of-k of a dataset, (num_questions, num_draws) or (num_questions, 1) for k = N, on the
    subsets of `maj_at_k_matrix` for the same seed, so the curves are comparable."""
    return subset_score_matrix(
        _best_scores, [np.asarray(scores, float), np.asarray(correct, float)], k, num_draws, seed
    )


def roc_auc(scores, labels) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); None without both classes."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    # Average ranks (ties share the mean of their ranks), then U from the positives' rank sum.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2
    rank_sum = average_rank[inverse][labels].sum()
    u = rank_sum - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


# ---------------------------------------------------------------------------------------------
# Confidence intervals over problems: the paired bootstrap


def bootstrap_indices(num_problems: int, num_resamples: int, seed: int, key: str = "") -> np.ndarray:
    """(num_resamples, num_problems) problem indices drawn with replacement, a function of (seed,
    key, num_problems) only: every method scored on the same problems gets the same resamples,
    so differences between methods are paired."""
    if num_problems < 1 or num_resamples < 1:
        raise ValueError(f"need problems and resamples, got {num_problems} and {num_resamples}")
    digest = int.from_bytes(key.encode()[:16].ljust(16, b"\0"), "little")
    rng = np.random.default_rng([seed, num_problems, digest])
    return rng.integers(0, num_problems, size=(num_resamples, num_problems))


def bootstrap_ci(per_problem, indices: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `per_problem` scores over the resampled problem sets."""
    means = np.asarray(per_problem, dtype=float)[indices].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(scores_a, scores_b, indices: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean of a - b, CI low, CI high) of two methods' per-problem scores on the same problems,
    the CI from the same resampled problem sets for both (paired)."""
    difference = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    low, high = bootstrap_ci(difference, indices, confidence)
    return float(difference.mean()), low, high
