"""Grade sampled solutions: extract each answer, cluster equivalent answers per question (for
voting), and compare with the gold answer where one is given."""

from __future__ import annotations

from collections import defaultdict

from easy2hard.grading import MODES, GradingStats, cluster_many, extract_answer, grade_many


def judge_samples(
    samples: list[dict],
    gold_answers: dict[str, str],
    timeout: float,
    workers: int | None = None,
    cluster: bool = True,
    mode: str = "lenient",
    every_mode: bool = False,
    stats: GradingStats | None = None,
) -> list[dict]:
    """Samples with `answer`, `correct` (None where the question has no gold answer here) and,
    with `cluster`, `answer_cluster` (per-question id of the equivalence class; -1: no answer),
    all under the grading `mode`. With `every_mode`, `verdicts` holds `correct` and
    `answer_cluster` under each grading mode too (the report's second grader).

    With clusters, a cluster's representative (its first answer) is graded and every member
    shares that verdict: equivalence is not transitive, and a vote must never be split between
    a "correct" and an "incorrect" half of the same cluster.
    """
    stats = stats if stats is not None else GradingStats()
    answers = [extract_answer(sample["completion"]) for sample in samples]
    graded = {
        m: _grade(samples, answers, gold_answers, timeout, workers, cluster, m, stats)
        for m in (MODES if every_mode else (mode,))
    }
    correct, clusters = graded[mode]
    judged = []
    for index, (sample, answer) in enumerate(zip(samples, answers)):
        row = {key: value for key, value in sample.items() if key != "completion"}
        row["answer"] = answer
        row["correct"] = correct[index]
        if cluster:
            row["answer_cluster"] = clusters[index]
        if every_mode:
            row["verdicts"] = {
                m: {"correct": c[index], **({"answer_cluster": k[index]} if cluster else {})}
                for m, (c, k) in graded.items()
            }
        row["completion"] = sample["completion"]
        judged.append(row)
    return judged


def _grade(samples, answers, gold_answers, timeout, workers, cluster, mode, stats):
    """(correct per sample, cluster per sample or None) under one grading mode."""
    if cluster:
        clusters = _cluster_per_question(samples, answers, timeout, workers, mode, stats)
        representative = {}
        for sample, answer, cluster_id in zip(samples, answers, clusters):
            representative.setdefault((sample["unique_id"], cluster_id), answer)
        graded_answers = [representative[(s["unique_id"], c)] for s, c in zip(samples, clusters)]
    else:
        clusters, graded_answers = None, answers
    # Each distinct (answer, gold) pair is graded once: samples repeat answers a lot.
    pairs = sorted(
        {(a, gold_answers[s["unique_id"]]) for s, a in zip(samples, graded_answers) if s["unique_id"] in gold_answers},
        key=repr,
    )
    verdicts = dict(
        zip(pairs, grade_many(pairs, timeout=timeout, workers=workers, progress=True, mode=mode, stats=stats))
    )
    correct = [
        None if s["unique_id"] not in gold_answers else verdicts[(a, gold_answers[s["unique_id"]])]
        for s, a in zip(samples, graded_answers)
    ]
    return correct, clusters


def _cluster_per_question(samples, answers, timeout, workers, mode, stats) -> list[int]:
    by_question = defaultdict(list)
    for index, sample in enumerate(samples):
        by_question[sample["unique_id"]].append(index)
    groups = list(by_question.values())
    found = cluster_many([[answers[i] for i in indices] for indices in groups], timeout, workers, mode, stats)
    clusters = [-1] * len(samples)
    for indices, group_clusters in zip(groups, found):
        for index, cluster_id in zip(indices, group_clusters):
            clusters[index] = cluster_id
    return clusters
