"""Scoring utilities for majority voting (maj@k) over sampled solutions; numpy only.

A question's samples are described by two parallel arrays: ``clusters`` (the id of the
equivalence class of each sample's answer, ids are per question, -1 = no answer extracted)
and ``correct`` (whether each sample's answer is right). Everything is deterministic given a
seed, and the random subsets of a question depend only on (seed, question index), so every
generator scored with the same seed and question order sees the same subsets.
"""

from __future__ import annotations

import numpy as np

NO_ANSWER = -1
LEVELS = (1, 2, 3, 4, 5)


def majority_vote(clusters, correct) -> float:
    """Score of majority voting over one set of samples, in [0, 1].

    The most frequent cluster wins; samples without an answer (cluster -1) never vote.
    Ties are broken by expectation: with several top clusters the score is the fraction of
    them that are correct, i.e. the expected score of picking one uniformly at random. This
    keeps averaged curves independent of sample order. No valid answer at all scores 0.0.
    """
    clusters = np.asarray(clusters).reshape(1, -1)
    correct = np.asarray(correct).reshape(1, -1)
    return float(_vote_scores(clusters, correct)[0])


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


def maj_at_k_draws(
    clusters, correct, k: int, num_draws: int, seed: int, question_index: int = 0
) -> np.ndarray:
    """Majority-vote score of one question for each of `num_draws` random size-k subsets.

    The subsets depend only on (seed, question_index) and k, so rows for different questions
    can be stacked into a (num_questions, num_draws) matrix (see `maj_at_k_matrix`). Draw j
    uses the first k samples of the same permutation for every k, so subsets are nested
    across k. Returns a single score when k equals the number of samples (one subset).
    """
    clusters = np.asarray(clusters)
    correct = np.asarray(correct)
    if clusters.shape != correct.shape or clusters.ndim != 1:
        raise ValueError("clusters and correct must be 1-D arrays of the same length")
    rng = np.random.default_rng([seed, question_index])
    draws = subset_indices(len(clusters), k, num_draws, rng)
    return _vote_scores(clusters[draws], correct[draws])


def maj_at_k_matrix(clusters, correct, k: int, num_draws: int, seed: int) -> np.ndarray:
    """maj@k scores of a dataset, shape (num_questions, num_draws), or (num_questions, 1) for k = N.

    `clusters` and `correct` are (num_questions, N); row i is scored with question_index=i.
    Column j of the result is one "run" of maj@k over the whole dataset.
    """
    clusters = np.asarray(clusters)
    correct = np.asarray(correct)
    rows = [
        maj_at_k_draws(clusters[index], correct[index], k, num_draws, seed, question_index=index)
        for index in range(len(clusters))
    ]
    width = 1 if k == clusters.shape[1] else num_draws
    return np.array(rows, dtype=float).reshape(len(rows), width)


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


def _vote_scores(clusters: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Majority-vote score of every row of (draws, k) cluster ids and correctness flags."""
    num_rows = clusters.shape[0]
    valid = clusters != NO_ANSWER
    if not valid.any():
        return np.zeros(num_rows)
    # Dense cluster ids 0..C-1 let one bincount count the votes of all rows at once.
    ids, dense = np.unique(clusters, return_inverse=True)
    num_clusters = len(ids)
    slots = (np.arange(num_rows)[:, None] * num_clusters + dense.reshape(clusters.shape))[valid]
    size = num_rows * num_clusters
    votes = np.bincount(slots, minlength=size).reshape(num_rows, num_clusters)
    right = np.bincount(slots, weights=correct[valid].astype(float), minlength=size)
    # A cluster's correctness is the mean over its samples (all equal for consistent data).
    right = right.reshape(num_rows, num_clusters)
    cluster_correct = np.divide(right, votes, out=np.zeros(votes.shape), where=votes > 0)
    winners = (votes == votes.max(axis=1, keepdims=True)) & (votes > 0)
    num_winners = winners.sum(axis=1)
    scores = (winners * cluster_correct).sum(axis=1)
    return np.divide(scores, num_winners, out=np.zeros(num_rows), where=num_winners > 0)


# ---------------------------------------------------------------------------------------------
# Evaluator scores: step aggregation, best-of-N, AUC

AGGREGATIONS = ("min", "prod", "last", "mean")


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
    """best-of-k of a dataset, (num_questions, num_draws) or (num_questions, 1) for k = N; the
    subsets are those of `maj_at_k_matrix` for the same seed, so the curves are comparable."""
    scores = np.asarray(scores, dtype=float)
    correct = np.asarray(correct, dtype=float)
    rows = []
    for index in range(len(scores)):
        draws = subset_indices(scores.shape[1], k, num_draws, np.random.default_rng([seed, index]))
        rows.append(_best_scores(scores[index][draws], correct[index][draws]))
    return np.array(rows, dtype=float).reshape(len(rows), -1)


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
