"""Grade sampled solutions: extract each answer, cluster equivalent answers per question (for
voting), and compare with the gold answer where one is given."""

from __future__ import annotations

from collections import defaultdict

from easy2hard.grading import cluster_answers, extract_answer, grade_many


def judge_samples(
    samples: list[dict],
    gold_answers: dict[str, str],
    timeout: float,
    workers: int | None = None,
    cluster: bool = True,
) -> list[dict]:
    """Samples with `answer`, `correct` (None where the question has no gold answer here) and,
    with `cluster`, `answer_cluster` (per-question id of the equivalence class; -1: no answer).

    With clusters, a cluster's representative (its first answer) is graded and every member
    shares that verdict: equivalence is not transitive, and a vote must never be split between
    a "correct" and an "incorrect" half of the same cluster.
    """
    answers = [extract_answer(sample["completion"]) for sample in samples]
    if cluster:
        clusters = _cluster_per_question(samples, answers, timeout, workers)
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
    verdicts = dict(zip(pairs, grade_many(pairs, timeout=timeout, workers=workers, progress=True)))
    judged = []
    for index, (sample, answer) in enumerate(zip(samples, answers)):
        gold = gold_answers.get(sample["unique_id"])
        row = {key: value for key, value in sample.items() if key != "completion"}
        row["answer"] = answer
        row["correct"] = None if gold is None else verdicts[(graded_answers[index], gold)]
        if clusters is not None:
            row["answer_cluster"] = clusters[index]
        row["completion"] = sample["completion"]
        judged.append(row)
    return judged


def _cluster_per_question(samples: list[dict], answers: list[str | None], timeout: float, workers: int | None) -> list[int]:
    by_question = defaultdict(list)
    for index, sample in enumerate(samples):
        by_question[sample["unique_id"]].append(index)
    clusters = [-1] * len(samples)
    for indices in by_question.values():
        found = cluster_answers([answers[i] for i in indices], timeout=timeout, workers=workers)
        for index, cluster in zip(indices, found):
            clusters[index] = cluster
    return clusters
