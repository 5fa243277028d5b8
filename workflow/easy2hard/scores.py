"""Loading and validating the report's inputs: the evaluation stage's JSONL files, one row per
(question, sample): ``unique_id, level, subject, sample_index, answer, answer_cluster, correct``,
and the scoring stage's files, one row per sample: ``unique_id, sample_index, step_scores``.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from easy2hard.io import DataError, read_jsonl
from easy2hard.metrics import LEVELS, aggregate_steps

SAMPLE_FIELDS = ("unique_id", "level", "subject", "sample_index", "answer", "answer_cluster", "correct")
SCORE_FIELDS = ("unique_id", "sample_index", "step_scores")


@dataclass(frozen=True)
class Samples:
    """One generator's samples as arrays; questions sorted by unique_id."""

    unique_ids: list[str]
    levels: np.ndarray  # (questions,)
    subjects: np.ndarray  # (questions,), str or None
    clusters: np.ndarray  # (questions, samples)
    correct: np.ndarray  # (questions, samples), bool
    valid: np.ndarray  # (questions, samples), bool: finished (not truncated) and with an answer

    @property
    def num_samples(self) -> int:
        return self.clusters.shape[1]


def load_samples(path: str | os.PathLike, grader: str | None = None) -> Samples:
    """Read and validate an evaluation JSONL file; every question must have the same sample count.
    `grader`: read `correct` / `answer_cluster` as that grading mode gave them (the row's
    `verdicts`) instead of the configured mode's (the row's own fields)."""
    path = Path(path)
    questions: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in read_jsonl(path, required=SAMPLE_FIELDS):
        if grader is not None:
            row = {**row, **_verdicts_of(path, row, grader)}
        _check_row(path, row)
        samples = questions[row["unique_id"]]
        if row["sample_index"] in samples:
            raise DataError(f"{path}: question {row['unique_id']!r} repeats sample_index {row['sample_index']}")
        samples[row["sample_index"]] = row
    if not questions:
        raise DataError(f"{path}: no rows")
    counts = {len(samples) for samples in questions.values()}
    if len(counts) > 1:
        raise DataError(f"{path}: questions have different sample counts ({sorted(counts)}); expected one N")
    (num_samples,) = counts
    unique_ids = sorted(questions)
    rows = [[questions[uid].get(index) for index in range(num_samples)] for uid in unique_ids]
    for uid, samples in zip(unique_ids, rows):
        _check_question(path, uid, samples)
    return Samples(
        unique_ids=unique_ids,
        levels=np.array([samples[0]["level"] for samples in rows]),
        subjects=np.array([samples[0]["subject"] for samples in rows], dtype=object),
        clusters=np.array([[row["answer_cluster"] for row in samples] for samples in rows]),
        correct=np.array([[row["correct"] for row in samples] for samples in rows], dtype=bool),
        valid=np.array(
            [
                [row.get("finished", True) is not False and row["answer"] is not None for row in samples]
                for samples in rows
            ],
            dtype=bool,
        ),
    )


def _verdicts_of(path: Path, row: dict, grader: str) -> dict:
    verdicts = (row.get("verdicts") or {}).get(grader)
    if not isinstance(verdicts, dict) or "correct" not in verdicts or "answer_cluster" not in verdicts:
        raise DataError(
            f"{path}: question {row['unique_id']!r} sample {row['sample_index']!r}: no verdicts of the "
            f"{grader!r} grader (field 'verdicts.{grader}'); re-run the evaluation stage"
        )
    return {"correct": verdicts["correct"], "answer_cluster": verdicts["answer_cluster"]}


def _is_int(value) -> bool:
    # bool is an int subclass in Python, but true/false is never a valid level or index.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_row(path: Path, row: dict) -> None:
    where = f"{path}: question {row['unique_id']!r}"
    if not isinstance(row["unique_id"], str):
        raise DataError(f"{path}: unique_id must be a string, got {row['unique_id']!r}")
    if not _is_int(row["level"]) or row["level"] not in LEVELS:
        raise DataError(f"{where}: level must be one of {list(LEVELS)}, got {row['level']!r}")
    if row["subject"] is not None and not isinstance(row["subject"], str):
        raise DataError(f"{where}: subject must be a string or null, got {row['subject']!r}")
    if not _is_int(row["sample_index"]) or row["sample_index"] < 0:
        raise DataError(f"{where}: sample_index must be a non-negative integer, got {row['sample_index']!r}")
    if not _is_int(row["answer_cluster"]) or row["answer_cluster"] < -1:
        raise DataError(f"{where}: answer_cluster must be an integer >= -1, got {row['answer_cluster']!r}")
    if not isinstance(row["correct"], bool):
        raise DataError(f"{where}: correct must be true or false, got {row['correct']!r}")


def _check_question(path: Path, uid: str, samples: list[dict | None]) -> None:
    """Sample indices are 0..N-1, level and subject are shared, equivalent answers agree on correctness."""
    where = f"{path}: question {uid!r}"
    if any(row is None for row in samples):
        raise DataError(f"{where}: sample indices are not 0..{len(samples) - 1}")
    for field in ("level", "subject"):
        if len({row[field] for row in samples}) > 1:
            raise DataError(f"{where}: samples disagree on the {field}")
    verdicts: dict[int, bool] = {}
    for row in samples:
        cluster = row["answer_cluster"]
        if cluster >= 0 and verdicts.setdefault(cluster, row["correct"]) != row["correct"]:
            raise DataError(f"{where}: answer_cluster {cluster} holds both correct and incorrect answers")


def read_step_scores(path: str | os.PathLike) -> dict[tuple[str, int], list[float]]:
    """{(unique_id, sample_index): step_scores} of a scores JSONL file, validated."""
    path = Path(path)
    scores: dict[tuple[str, int], list[float]] = {}
    for row in read_jsonl(path, required=SCORE_FIELDS):
        key = (row["unique_id"], row["sample_index"])
        where = f"{path}: question {key[0]!r} sample {key[1]!r}"
        values = row["step_scores"]
        # Non-finite scores would make max/sum (and so every method) silently meaningless.
        if not isinstance(values, list) or not all(_is_finite_number(v) for v in values):
            raise DataError(f"{where}: step_scores must be a list of finite numbers, got {values!r}")
        if key in scores:
            raise DataError(f"{where}: scored twice")
        scores[key] = values
    return scores


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_scores(path: str | os.PathLike, samples: Samples, samples_path: str | os.PathLike) -> list[list[list[float]]]:
    """Step scores of every sample, (questions, N) in the order of `samples`, joined on
    (unique_id, sample_index); a sample without a score row, or a score row without a sample, is an error."""
    by_key = read_step_scores(path)
    grid = []
    for uid in samples.unique_ids:
        row = []
        for index in range(samples.num_samples):
            if (uid, index) not in by_key:
                raise DataError(f"{path}: no scores for {uid} sample {index} of {samples_path}")
            row.append(by_key.pop((uid, index)))
        grid.append(row)
    if by_key:
        uid, index = next(iter(by_key))
        raise DataError(
            f"{path}: scores {uid} sample {index}, which is not a sample of {samples_path} "
            f"({len(by_key)} such rows; stale scores?)"
        )
    return grid


def aggregate_grid(grid: list[list[list[float]]], how: str) -> np.ndarray:
    """(questions, N) solution scores from a grid of step-score lists."""
    return np.array([[aggregate_steps(steps, how) for steps in row] for row in grid], dtype=float)


def load_greedy(path, samples: Samples, sampled_path, grader: str | None = None) -> Samples:
    """Greedy decodes: one sample per question, the same questions (and levels) as the sampled file."""
    greedy = load_samples(path, grader)
    if greedy.num_samples != 1:
        raise DataError(f"{path}: greedy file must hold one sample per question, found {greedy.num_samples}")
    if greedy.unique_ids != samples.unique_ids:
        raise DataError(f"{path}: greedy questions differ from those in {sampled_path}")
    if not np.array_equal(greedy.levels, samples.levels):
        raise DataError(f"{path}: greedy levels differ from those in {sampled_path}")
    return greedy
