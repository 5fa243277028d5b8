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
    with `cluster`, `answer_cluster` (per-question id of the equivalence class; -1: no answer)."""
    answers = [extract_answer(sample["completion"]) for sample in samples]
    # Each distinct (answer, gold) pair is graded once: samples repeat answers a lot.
    pairs = sorted(
        {(answer, gold_answers[s["unique_id"]]) for s, answer in zip(samples, answers) if s["unique_id"] in gold_answers},
        key=repr,
    )
    verdicts = dict(zip(pairs, grade_many(pairs, timeout=timeout, workers=workers, progress=True)))
    clusters = _cluster_per_question(samples, answers, timeout) if cluster else None
    judged = []
    for index, (sample, answer) in enumerate(zip(samples, answers)):
        gold = gold_answers.get(sample["unique_id"])
        row = {key: value for key, value in sample.items() if key != "completion"}
        row["answer"] = answer
        row["correct"] = None if gold is None else verdicts[(answer, gold)]
        if clusters is not None:
            row["answer_cluster"] = clusters[index]
        row["completion"] = sample["completion"]
        judged.append(row)
    return judged


def _cluster_per_question(samples: list[dict], answers: list[str | None], timeout: float) -> list[int]:
    by_question = defaultdict(list)
    for index, sample in enumerate(samples):
        by_question[sample["unique_id"]].append(index)
    clusters = [-1] * len(samples)
    for indices in by_question.values():
        for index, cluster in zip(indices, cluster_answers([answers[i] for i in indices], timeout=timeout)):
            clusters[index] = cluster
    return clusters
