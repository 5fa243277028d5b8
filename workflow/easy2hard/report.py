"""The evaluation report: greedy decoding, majority voting, evaluator-weighted voting and
best-of-N accuracy by difficulty, as CSV, Markdown, plots and a settings record.

Inputs are the evaluation stage's JSONL files, one row per (question, sample):
``unique_id, level, subject, sample_index, answer, answer_cluster, correct``, and the scoring
stage's files, one row per sample: ``unique_id, sample_index, step_scores``. Only test-split
files are read; the hard gold answers reach this module only through the evaluation outputs.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from easy2hard.config import GOLD_SELECTED_SUFFIX
from easy2hard.io import DataError, atomic_output, read_jsonl
from easy2hard.metrics import (
    AGGREGATIONS,
    LEVELS,
    accuracy_with_std,
    aggregate_steps,
    best_of_n_matrix,
    level_groups,
    aggregation_for,
    bootstrap_ci,
    maj_at_k_matrix,
    ns_for,
    paired_difference,
    selection_scores,
    weighted_vote_matrix,
)
from easy2hard.metrics import bootstrap_indices as _bootstrap_indices

SAMPLE_FIELDS = ("unique_id", "level", "subject", "sample_index", "answer", "answer_cluster", "correct")
SCORE_FIELDS = ("unique_id", "sample_index", "step_scores")
COLUMNS = ["generator", "evaluator", "method", "aggregation", "n", "levels", "accuracy", "std", "num_problems", "grader",
           "ci_low", "ci_high"]
ORACLE_SUFFIX = "_full"  # an oracle (the "Full" model) of a policy or evaluator: sft_full, prm_full, ...
GAP_COLUMNS = ["grader", "generator", "method", "evaluator", "oracle", "aggregation", "levels", "easy_to_hard",
               "oracle_accuracy", "majority", "recovered", "ci_low", "ci_high", "num_problems", "note"]
COMPARISON_COLUMNS = ["grader", "comparison", "generator", "method", "evaluator", "aggregation", "versus_generator",
                      "versus_method", "versus_evaluator", "versus_aggregation", "levels", "difference", "ci_low",
                      "ci_high", "num_problems"]
NOT_APPLICABLE = "-"  # evaluator / aggregation of the methods that use no evaluator
EVALUATOR_METHODS = ("weighted", "best_of_n")
SUMMARY_GROUPS = ("easy", "hard", "all")
LEVEL_GROUPS = tuple(f"level_{level}" for level in LEVELS)
SUBJECT_PREFIX = "subject:"
SETTINGS_KEYS = ("easy_levels", "num_draws", "seed", "evaluator_aggregation")
# File names inside the report folder (the rule declares the same names).
METRICS_CSV, COMPARISONS_CSV, GAP_CSV, REPORT_MD, CURVES_PNG, AGGREGATIONS_PNG, SETTINGS_JSON = (
    "metrics.csv", "comparisons.csv", "gap_recovered.csv", "report.md", "accuracy_vs_n.png",
    "best_of_n_aggregations.png", "report_settings.json",
)
OUTPUT_FILES = (METRICS_CSV, COMPARISONS_CSV, GAP_CSV, REPORT_MD, CURVES_PNG, AGGREGATIONS_PNG, SETTINGS_JSON)


@dataclass(frozen=True)
class Bootstrap:
    """The paired bootstrap over problems (report.bootstrap): resampled problem sets per group,
    the same for every method and policy."""

    resamples: int
    seed: int
    confidence: float

    def indices(self, group: str, num_problems: int) -> np.ndarray:
        return _bootstrap_indices(num_problems, self.resamples, self.seed, group)


@dataclass
class PerProblem:
    """One method's score on each problem at its largest n (what the CIs and comparisons resample)."""

    unique_ids: list[str]
    scores: np.ndarray  # (problems,)
    masks: dict[str, np.ndarray]  # group -> problems in it


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


# ---------------------------------------------------------------------------------------------
# Loading


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
        valid=np.array([[row.get("finished", True) is not False and row["answer"] is not None for row in samples]
                        for samples in rows], dtype=bool),
    )


def _verdicts_of(path: Path, row: dict, grader: str) -> dict:
    verdicts = (row.get("verdicts") or {}).get(grader)
    if not isinstance(verdicts, dict) or "correct" not in verdicts or "answer_cluster" not in verdicts:
        raise DataError(f"{path}: question {row['unique_id']!r} sample {row['sample_index']!r}: no verdicts of the "
                        f"{grader!r} grader (field 'verdicts.{grader}'); re-run the evaluation stage")
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
        raise DataError(f"{path}: scores {uid} sample {index}, which is not a sample of {samples_path} "
                        f"({len(by_key)} such rows; stale scores?)")
    return grid


def aggregate_grid(grid: list[list[list[float]]], how: str) -> np.ndarray:
    """(questions, N) solution scores from a grid of step-score lists."""
    return np.array([[aggregate_steps(steps, how) for steps in row] for row in grid], dtype=float)


def report_aggregations(aggregations, evaluator_aggregation: dict[str, str]) -> list[str]:
    """The aggregations to compute: the configured ones, plus each evaluator's own if missing
    (the tables and the plot need them)."""
    chosen = list(dict.fromkeys([*aggregations, *evaluator_aggregation.values()]))
    unknown = [how for how in chosen if how not in AGGREGATIONS]
    if unknown:
        raise ValueError(f"unknown aggregation {unknown[0]!r} (one of {', '.join(AGGREGATIONS)})")
    return chosen


# ---------------------------------------------------------------------------------------------
# Metrics


def group_masks(samples: Samples, easy_levels) -> dict[str, np.ndarray]:
    """Boolean question masks of the level groups (easy, hard, all, level_k) and of each subject
    (`subject:<name>`, all levels); groups without problems are left out."""
    masks = {name: np.isin(samples.levels, sorted(members)) for name, members in level_groups(easy_levels).items()}
    for subject in sorted({s for s in samples.subjects if s}):
        masks[SUBJECT_PREFIX + subject] = samples.subjects == subject
    return {name: mask for name, mask in masks.items() if mask.any()}


def compute_metrics(
    sampled: dict[str, str | os.PathLike],
    greedy: dict[str, str | os.PathLike],
    easy_levels,
    num_draws: int,
    seed: int,
    scores: dict[str, dict[str, str | os.PathLike]] | None = None,
    aggregations=AGGREGATIONS,
    grader: str = "lenient",
    other_graders=(),
    bootstrap: Bootstrap | None = None,
    per_problem: dict | None = None,
) -> pd.DataFrame:
    """Accuracy of every generator x method (x evaluator x aggregation) x n x group, one row per number.

    `scores` maps generator -> evaluator -> scores JSONL of that generator's sampled solutions.
    Columns are COLUMNS: method is greedy | majority | weighted | best_of_n; evaluator and
    aggregation are "-" for greedy and majority; n runs over 1, 2, 4, ..., N (greedy: 1);
    accuracy and std are fractions, std across the random subset draws (0 for greedy and n = N).
    `grader` names the grading mode of the evaluation files' own verdicts (every n); each of
    `other_graders` is read from their `verdicts` and reported at n = N only (the second table).
    With `bootstrap`, rows at n = N (and greedy) get the CI over problems (ci_low, ci_high; NaN
    elsewhere), and `per_problem`, when given, collects their per-problem scores for
    `paired_comparisons`.
    """
    scores = scores or {}
    if set(sampled) != set(greedy):
        raise ValueError(f"sampled and greedy name different generators: {sorted(sampled)} vs {sorted(greedy)}")
    if not set(scores) <= set(sampled):
        raise ValueError(f"scores name generators without samples: {sorted(set(scores) - set(sampled))}")
    rows = []
    for generator, sampled_path in sampled.items():
        grids = None
        for name in (grader, *other_graders):
            stored = None if name == grader else name
            samples = load_samples(sampled_path, stored)
            greedy_samples = _load_greedy(greedy[generator], samples, sampled_path, stored)
            masks = group_masks(samples, easy_levels)
            ns = ns_for(samples.num_samples) if name == grader else [samples.num_samples]
            if grids is None:  # the scores do not depend on the grader
                grids = {e: load_scores(path, samples, sampled_path) for e, path in scores.get(generator, {}).items()}

            def add(method, n, matrix, evaluator=NOT_APPLICABLE, aggregation=NOT_APPLICABLE):
                key = dict(generator=generator, evaluator=evaluator, method=method, aggregation=aggregation, n=n)
                at_n = method == "greedy" or n == samples.num_samples
                rows.extend({**row, "grader": name} for row in _group_rows(key, matrix, masks, bootstrap if at_n else None))
                if at_n and per_problem is not None:
                    per_problem[(name, generator, method, evaluator, aggregation)] = PerProblem(
                        samples.unique_ids, matrix.mean(axis=1), masks)

            add("greedy", 1, greedy_samples.correct.astype(float))
            for n in ns:
                add("majority", n, maj_at_k_matrix(samples.clusters, samples.correct, n, num_draws, seed))
            for evaluator, grid in grids.items():
                for how in aggregations:
                    ranked, weights = selection_scores(aggregate_grid(grid, how), samples.valid)
                    for n in ns:
                        add("weighted", n, weighted_vote_matrix(samples.clusters, samples.correct, weights, n, num_draws,
                                                                seed), evaluator, how)
                        add("best_of_n", n, best_of_n_matrix(ranked, samples.correct, n, num_draws, seed), evaluator, how)
    return pd.DataFrame(rows, columns=COLUMNS)


def _load_greedy(path, samples: Samples, sampled_path, grader: str | None = None) -> Samples:
    """Greedy decodes: one sample per question, the same questions (and levels) as the sampled file."""
    greedy = load_samples(path, grader)
    if greedy.num_samples != 1:
        raise DataError(f"{path}: greedy file must hold one sample per question, found {greedy.num_samples}")
    if greedy.unique_ids != samples.unique_ids:
        raise DataError(f"{path}: greedy questions differ from those in {sampled_path}")
    if not np.array_equal(greedy.levels, samples.levels):
        raise DataError(f"{path}: greedy levels differ from those in {sampled_path}")
    return greedy


def _group_rows(key: dict, scores: np.ndarray, masks: dict[str, np.ndarray], bootstrap: Bootstrap | None) -> list[dict]:
    """One row per group; with `bootstrap`, the CI over problems of the per-problem scores (the
    mean over draws, i.e. the score itself at n = N)."""
    rows = []
    for name, mask in masks.items():
        accuracy, std, num_problems = accuracy_with_std(scores[mask])
        low = high = math.nan
        if bootstrap is not None:
            low, high = bootstrap_ci(scores[mask].mean(axis=1), bootstrap.indices(name, num_problems), bootstrap.confidence)
        rows.append(dict(key, levels=name, accuracy=accuracy, std=std, num_problems=num_problems, ci_low=low, ci_high=high))
    return rows


def paired_comparisons(per_problem: dict[tuple, PerProblem], bootstrap: Bootstrap, aggregations: dict[str, str],
                       baseline: str = "sft") -> pd.DataFrame:
    """The paired differences that carry the paper's claims, per grader and group (COMPARISON_COLUMNS):

    * ``evaluator_vs_majority``: weighted@N and best-of-N of each evaluator (its own aggregation)
      minus majority@N, for every policy;
    * ``policy_vs_<baseline>``: every other policy's greedy and majority@N minus the baseline's
      (oracle policies excepted);
    * ``easy_vs_oracle``: each easy-to-hard evaluator's weighted@N and best-of-N minus its oracle's
      (``<kind>_full``) on the same samples, and a policy's greedy and majority@N minus its oracle's
      (``sft`` minus ``sft_full``).

    `per_problem` maps (grader, generator, method, evaluator, aggregation) to the method's
    per-problem scores at its largest n. Differences are over the problems both methods scored
    (in a run, every policy's test problems), with the same resampled problem sets for both."""
    rows = []

    def compare(kind, grader, a: tuple, b: tuple):
        first, second = per_problem.get((grader, *a)), per_problem.get((grader, *b))
        if first is None or second is None:
            return
        position = {uid: i for i, uid in enumerate(second.unique_ids)}
        shared = [i for i, uid in enumerate(first.unique_ids) if uid in position]
        other = [position[first.unique_ids[i]] for i in shared]
        for group, mask in first.masks.items():
            in_group = mask[shared]
            count = int(in_group.sum())
            if not count:
                continue
            difference, low, high = paired_difference(first.scores[shared][in_group], second.scores[other][in_group],
                                                      bootstrap.indices(group, count), bootstrap.confidence)
            rows.append(dict(grader=grader, comparison=kind, generator=a[0], method=a[1], evaluator=a[2],
                             aggregation=a[3], versus_generator=b[0], versus_method=b[1], versus_evaluator=b[2],
                             versus_aggregation=b[3], levels=group, difference=difference, ci_low=low, ci_high=high,
                             num_problems=count))

    keys = list(per_problem)
    graders = list(dict.fromkeys(key[0] for key in keys))
    generators = list(dict.fromkeys(key[1] for key in keys))
    majority = ("majority", NOT_APPLICABLE, NOT_APPLICABLE)
    greedy = ("greedy", NOT_APPLICABLE, NOT_APPLICABLE)
    for grader in graders:
        for generator in generators:
            evaluators = dict.fromkeys(key[3] for key in keys if key[:2] == (grader, generator) and key[2] in EVALUATOR_METHODS)
            for evaluator in evaluators:
                how = aggregation_for(aggregations, evaluator)
                for method in EVALUATOR_METHODS:
                    compare("evaluator_vs_majority", grader, (generator, method, evaluator, how), (generator, *majority))
                    if not evaluator.endswith(ORACLE_SUFFIX):
                        oracle = evaluator + ORACLE_SUFFIX
                        compare("easy_vs_oracle", grader, (generator, method, evaluator, how),
                                (generator, method, oracle, aggregation_for(aggregations, oracle)))
        for generator in generators:
            if generator.endswith(ORACLE_SUFFIX):
                continue
            for method in (greedy, majority):
                if generator != baseline:
                    compare(f"policy_vs_{baseline}", grader, (generator, *method), (baseline, *method))
                compare("easy_vs_oracle", grader, (generator, *method), (generator + ORACLE_SUFFIX, *method))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def supervision_gap(per_problem: dict[tuple, PerProblem], bootstrap: Bootstrap, aggregations: dict[str, str],
                    baseline: str = "sft") -> pd.DataFrame:
    """How much of the supervision gap each easy-to-hard evaluator recovers, per grader, method and
    group (GAP_COLUMNS), on the baseline policy's samples:

        recovered = (easy-to-hard - majority@N) / (oracle - majority@N)

    with the method (weighted@N or best-of-N) of the easy-trained evaluator and of its oracle
    (``<kind>_full``, trained on every level). 1 means the easy evaluator does as well as the one
    with supervision on every level, 0 no better than voting. Undefined (NaN, with a note) when the
    oracle does not beat majority voting by at least one problem's worth (1 / problems): the ratio
    would divide by noise. The CI comes from the same paired resamples; it is left out when some
    resample's oracle gain is not positive."""
    rows = []
    majority_key = ("majority", NOT_APPLICABLE, NOT_APPLICABLE)
    for grader, generator, method, evaluator, how in list(per_problem):
        if generator != baseline or method not in EVALUATOR_METHODS or evaluator.endswith(ORACLE_SUFFIX):
            continue
        oracle = evaluator + ORACLE_SUFFIX
        oracle_key = (grader, generator, method, oracle, aggregation_for(aggregations, oracle))
        voting_key = (grader, generator, *majority_key)
        if how != aggregation_for(aggregations, evaluator) or oracle_key not in per_problem or voting_key not in per_problem:
            continue
        easy, full, voting = per_problem[(grader, generator, method, evaluator, how)], per_problem[oracle_key], per_problem[voting_key]
        for group, mask in easy.masks.items():
            count = int(mask.sum())
            gain, oracle_gain = easy.scores[mask] - voting.scores[mask], full.scores[mask] - voting.scores[mask]
            recovered = low = high = math.nan
            note = ""
            if oracle_gain.mean() >= 1 / count:
                recovered = gain.mean() / oracle_gain.mean()
                indices = bootstrap.indices(group, count)
                denominators = oracle_gain[indices].mean(axis=1)
                if (denominators > 0).all():
                    ratios = gain[indices].mean(axis=1) / denominators
                    tail = 100 * (1 - bootstrap.confidence) / 2
                    low, high = (float(v) for v in np.percentile(ratios, [tail, 100 - tail]))
                else:
                    note = "no CI: the oracle's gain over voting is not positive in every resample"
            else:
                note = "undefined: the oracle does not beat majority voting by one problem"
            rows.append(dict(grader=grader, generator=generator, method=method, evaluator=evaluator, oracle=oracle,
                             aggregation=how, levels=group, easy_to_hard=float(easy.scores[mask].mean()),
                             oracle_accuracy=float(full.scores[mask].mean()), majority=float(voting.scores[mask].mean()),
                             recovered=recovered, ci_low=low, ci_high=high, num_problems=count, note=note))
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def select(df: pd.DataFrame, method: str, evaluator: str = NOT_APPLICABLE, aggregation: str = NOT_APPLICABLE,
           n: int | None = None) -> pd.DataFrame:
    """Rows of one method (and evaluator, aggregation, n when given)."""
    mask = (df["method"] == method) & (df["evaluator"] == evaluator) & (df["aggregation"] == aggregation)
    if n is not None:
        mask &= df["n"] == n
    return df[mask]


def method_label(method: str, evaluator: str = NOT_APPLICABLE, n="N", aggregation: str | None = None) -> str:
    """Greedy, Majority@16, Weighted@16 (prm, min), Best-of-16 (orm, last): the paper's names, with
    the evaluator and its step aggregation."""
    which = evaluator if aggregation is None else f"{evaluator}, {aggregation}"
    if method == "greedy":
        return "Greedy"
    if method == "majority":
        return f"Majority@{n}"
    if method == "weighted":
        return f"Weighted@{n} ({which})"
    if method == "best_of_n":
        return f"Best-of-{n} ({which})"
    raise ValueError(f"unknown method {method!r}")


def _evaluators(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(rows.loc[rows["method"].isin(EVALUATOR_METHODS), "evaluator"]))


def _methods_at_n(rows: pd.DataFrame, n: int, aggregations: dict[str, str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of greedy and of every method at n, each evaluator with its own step
    aggregation, in the paper's order: greedy, majority, then weighted and best-of-N per evaluator."""
    methods = [(method_label("greedy"), select(rows, "greedy")),
               (method_label("majority", n=n), select(rows, "majority", n=n))]
    for evaluator in _evaluators(rows):
        how = aggregation_for(aggregations, evaluator)
        for method in EVALUATOR_METHODS:
            methods.append((method_label(method, evaluator, n, how), select(rows, method, evaluator, how, n)))
    return methods


# ---------------------------------------------------------------------------------------------
# Writing


def write_report(df: pd.DataFrame, out_dir: str | os.PathLike, settings: dict,
                 comparisons: pd.DataFrame | None = None, gap: pd.DataFrame | None = None) -> None:
    """Write OUTPUT_FILES into `out_dir`, each atomically.

    `settings` must hold what the numbers depend on (SETTINGS_KEYS; optional "dataset", "split",
    "aggregations", "inputs", "upstream", "bootstrap"); it is written as report_settings.json and
    summarised in report.md's provenance paragraph. `comparisons` (COMPARISON_COLUMNS) are the
    paired differences of `paired_comparisons`.
    """
    missing = [key for key in SETTINGS_KEYS if key not in settings]
    if missing:
        raise ValueError(f"report settings lack {', '.join(missing)}")
    comparisons = comparisons if comparisons is not None else pd.DataFrame(columns=COMPARISON_COLUMNS)
    gap = gap if gap is not None else pd.DataFrame(columns=GAP_COLUMNS)
    out_dir = Path(out_dir)
    with atomic_output(out_dir / METRICS_CSV) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(out_dir / COMPARISONS_CSV) as tmp:
        comparisons.to_csv(tmp, index=False)
    with atomic_output(out_dir / GAP_CSV) as tmp:
        gap.to_csv(tmp, index=False)
    with atomic_output(out_dir / REPORT_MD) as tmp:
        tmp.write_text(render_markdown(df, settings, comparisons, gap), encoding="utf-8")
    with atomic_output(out_dir / CURVES_PNG) as tmp:
        plot_accuracy_vs_n(graded_by(df, settings), settings, tmp)
    with atomic_output(out_dir / AGGREGATIONS_PNG) as tmp:
        plot_aggregations(graded_by(df, settings), settings, tmp)
    with atomic_output(out_dir / SETTINGS_JSON) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _percent(row, with_std: bool) -> str:
    text = f"{100 * row.accuracy:.1f}"
    if with_std:
        return f"{text} ± {100 * row.std:.1f}"
    if not math.isnan(getattr(row, "ci_low", math.nan)):
        return f"{text} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
    return text


def _difference(row) -> str:
    """+3.1 [-0.5, 6.8] (points); bold when the interval excludes 0."""
    text = f"{100 * row.difference:+.1f} [{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}]"
    return f"**{text}**" if row.ci_low > 0 or row.ci_high < 0 else text


def _markdown_table(header: list[str], body: list[list[str]], text_columns: int = 1) -> list[str]:
    align = "|---" * text_columns + "|---:" * (len(header) - text_columns) + "|"
    return ["| " + " | ".join(header) + " |", align] + ["| " + " | ".join(cells) + " |" for cells in body]


def _cells(rows: pd.DataFrame, groups, with_std: bool = False) -> list[str]:
    by_group = {row.levels: row for row in rows.itertuples()}
    return [_percent(by_group[g], with_std) if g in by_group else "–" for g in groups]


def _counts(rows: pd.DataFrame, groups) -> list[str]:
    counts = dict(zip(rows["levels"], rows["num_problems"]))
    return [f"{counts[g]:,}" if g in counts else "0" for g in groups]


def graded_by(df: pd.DataFrame, settings: dict, grader: str | None = None) -> pd.DataFrame:
    """The rows of one grader (default: the configured one, settings["grader"], whose rows cover
    every n; the other graders' cover n = N only)."""
    if grader is None:
        grader = settings.get("grader") or (df["grader"].iloc[0] if len(df) else None)
    return df[df["grader"] == grader]


def _max_n(rows: pd.DataFrame) -> int:
    return int(select(rows, "majority")["n"].max())


def policy_label(generator: str) -> str:
    """A policy's name in the report; one selected with hard validation gold says so on every row."""
    if generator.endswith(GOLD_SELECTED_SUFFIX):
        return f"{generator.removesuffix(GOLD_SELECTED_SUFFIX)} (selected with hard validation gold)"
    return generator


def _main_table(df: pd.DataFrame, aggregations: dict[str, str]) -> list[str]:
    """The paper's table: every generator x method at its largest N, easy / hard / all."""
    body = []
    for generator, rows in df.groupby("generator", sort=False):
        name = policy_label(generator)
        body += [[name, label, *_cells(part, SUMMARY_GROUPS)] for label, part in _methods_at_n(rows, _max_n(rows), aggregations)]
        body.append([name, "Problems", *_counts(select(rows, "greedy"), SUMMARY_GROUPS)])
    return _markdown_table(["Policy", "Method", *SUMMARY_GROUPS], body, text_columns=2)


def _ci_note(settings: dict) -> str:
    bootstrap = settings.get("bootstrap")
    if not bootstrap:
        return ""
    return (f"[low, high]: the {100 * bootstrap['confidence']:.0f} % confidence interval of the accuracy over test "
            f"problems (paired bootstrap, {bootstrap['resamples']:,} resamples of the problems of each group, seed "
            f"{bootstrap['seed']}; the same resamples for every method and policy). It says how much the number would "
            "move on another draw of problems of the same kind; the ± of the curves below is something else, the "
            "variation over subsets of the samples.")


def _gap_section(gap: pd.DataFrame) -> list[str]:
    """Supervision gap recovered: one row per easy-to-hard evaluator and method, easy / hard / all."""
    body = []
    for (method, evaluator, oracle, how), rows in gap.groupby(["method", "evaluator", "oracle", "aggregation"], sort=False):
        by_group = {row.levels: row for row in rows.itertuples()}
        cells = []
        for group in SUMMARY_GROUPS:
            row = by_group.get(group)
            if row is None:
                cells.append("–")
            elif math.isnan(row.recovered):
                cells.append("n/a")
            elif math.isnan(row.ci_low):
                cells.append(f"{100 * row.recovered:.0f} %")
            else:
                cells.append(f"{100 * row.recovered:.0f} % [{100 * row.ci_low:.0f}, {100 * row.ci_high:.0f}]")
        body.append([f"{method_label(method, evaluator, 'N', how)} vs {oracle}", *cells])
    if not body:
        return []
    generator = gap["generator"].iloc[0]
    return [f"### Supervision gap recovered ({generator}'s samples)", "",
            "(easy-to-hard − majority@N) / (oracle − majority@N): the share of what supervision on every level "
            "adds to voting that the evaluator trained on easy problems alone achieves (100 %: as good as the "
            "oracle; 0 %: no better than voting). n/a: the oracle does not beat voting by one problem, so the ratio "
            "is undefined (`gap_recovered.csv` says why). [low, high]: paired bootstrap over problems.", "",
            *_markdown_table(["", *SUMMARY_GROUPS], body), ""]


def _comparison_section(comparisons: pd.DataFrame, settings: dict) -> list[str]:
    """The paired differences (points) with their CIs, easy / hard / all; bold: the CI excludes 0."""
    body = []
    keys = ["comparison", "generator", "method", "evaluator", "aggregation", "versus_generator", "versus_method",
            "versus_evaluator", "versus_aggregation"]
    for key, rows in comparisons.groupby(keys, sort=False):
        (kind, generator, method, evaluator, aggregation, versus_generator, versus_method, versus_evaluator,
         versus_aggregation) = key
        label = method_label(method, evaluator, "N", None if aggregation == NOT_APPLICABLE else aggregation)
        versus = method_label(versus_method, versus_evaluator, "N",
                              None if versus_aggregation == NOT_APPLICABLE else versus_aggregation)
        what = f"{label} − {versus}" if versus_generator == generator else f"{label} − {versus_generator} {versus}"
        by_group = {row.levels: row for row in rows.itertuples()}
        body.append([policy_label(generator), what, *[_difference(by_group[g]) if g in by_group else "–" for g in SUMMARY_GROUPS]])
    if not body:
        return []
    confidence = 100 * settings.get("bootstrap", {}).get("confidence", 0.95)
    return [f"### Paired differences (points, {confidence:.0f} % CI over problems; bold: the CI excludes 0)", "",
            "Each difference compares two methods on the same problems with the same bootstrap resamples "
            "(a paired comparison). `comparisons.csv` holds every group and grader.", "",
            *_markdown_table(["Policy", "Difference", *SUMMARY_GROUPS], body, text_columns=2), ""]


def _generator_section(generator: str, rows: pd.DataFrame, aggregations: dict[str, str]) -> list[str]:
    greedy, majority, max_n = select(rows, "greedy"), select(rows, "majority"), _max_n(rows)
    curve = [["Greedy", *_cells(greedy, SUMMARY_GROUPS)]]
    curve += [[f"maj@{n}", *_cells(select(rows, "majority", n=n), SUMMARY_GROUPS, with_std=True)]
              for n in sorted(majority["n"].unique())]
    curve.append(["Problems", *_counts(greedy, SUMMARY_GROUPS)])
    lines = [f"## {policy_label(generator)}", "", "Greedy (with its 95 % CI over problems) and majority voting over n samples "
             "(mean ± std over random sample subsets: the variation over sample subsets, not over problems):", "",
             *_markdown_table(["", *SUMMARY_GROUPS], curve), ""]
    subjects = [g for g in greedy["levels"] if g.startswith(SUBJECT_PREFIX)]
    for title, groups, names in [("Per level", LEVEL_GROUPS, LEVEL_GROUPS),
                                 ("Per subject (all levels)", subjects, [g[len(SUBJECT_PREFIX):] for g in subjects])]:
        if not groups:
            continue
        body = [[label, *_cells(part, groups)] for label, part in _methods_at_n(rows, max_n, aggregations)]
        body.append(["Problems", *_counts(greedy, groups)])
        lines += [f"{title}, N = {max_n}:", "", *_markdown_table(["", *names], body), ""]
    return lines


GRADER_NOTES = {
    "lenient": "The `lenient` grader: normal forms, then math-verify and sympy (unreduced fractions, decimals "
               "for fractions and equivalent expressions count as right).",
    "prm800k": "The `prm800k` grader is the authors' (PRM800K `grade_answer` with its sympy path off, as the "
               "paper's numbers were graded): string normal forms only, so an unreduced fraction or a decimal "
               "for a fraction is wrong. Compare these numbers with the paper's.",
}


def _intro(df: pd.DataFrame, settings: dict) -> str:
    easy = sorted(settings["easy_levels"])
    hard = sorted(set(LEVELS) - set(easy))
    sample_counts = "/".join(str(n) for n in sorted({_max_n(rows) for _, rows in df.groupby("generator")}))
    return (
        f"Accuracy (%) on the {settings.get('dataset', 'MATH')} {settings.get('split', 'test')} split. "
        f"Each policy has one greedy solution and N = {sample_counts} sampled solutions per problem. "
        "**Majority@n** picks the most frequent answer among n samples (equivalent answers grouped by the "
        "grader); **Weighted@n (evaluator)** picks the answer with the largest sum of evaluator scores; "
        "**Best-of-n (evaluator)** picks the sample with the highest score. A solution's score aggregates "
        f"its step scores with each evaluator's own aggregation in the tables and plot ({_aggregations_text(settings)}; "
        f"metrics.csv also holds {', '.join(settings.get('aggregations', []))}); a truncated solution or one "
        "without an answer ranks last in best-of-n and weighs nothing in weighted voting. "
        f"Easy = levels {', '.join(map(str, easy))}; hard = levels {', '.join(map(str, hard))}. "
        f"For n < N, accuracy is the mean over {settings['num_draws']} random size-n subsets of each problem's "
        f"samples (seed {settings['seed']}; the same subsets for every method) and ± is the standard deviation of "
        "the dataset accuracy across those draws; n = N uses all samples. Ties count as the fraction of the tied "
        "answers (samples) that are correct; samples without an answer never vote, and a problem without any "
        "answer scores 0."
    )


def _aggregations_text(settings: dict) -> str:
    return ", ".join(f"{evaluator} `{how}`" for evaluator, how in settings["evaluator_aggregation"].items())


def _sampling_backends(settings: dict) -> list[str]:
    """Which back end sampled each policy's test solutions (from the samples' provenance), and a
    warning when any fell back to generate on a model the engine is meant to run."""
    records = {(g, kind): record for g, by_kind in (settings.get("sampling") or {}).items()
               for kind, record in by_kind.items() if record}
    if not records:
        return []
    described = "; ".join(f"{g} {kind}: {record['backend']}" for (g, kind), record in records.items())
    lines = [f"Sampling back end of the test solutions (engine: `easy2hard.engine`; hf: transformers `generate`): {described}."]
    unexpected = sorted({f["reason"] for record in records.values() for f in record["fallbacks"] if not f["expected"]})
    if unexpected:
        lines.append("**Warning: some samples fell back to `generate` on a model the sampling engine is meant to "
                     f"run** ({'; '.join(unexpected)}).")
    return [" ".join(lines), ""]


def _provenance(settings: dict) -> list[str]:
    upstream = settings.get("upstream") or {}
    versions = [f"{name} `{upstream[key]}`" for name, key in (("code version", "code_version"),
                                                                ("grader version", "grader_version")) if upstream.get(key)]
    return [
        "## Provenance",
        "",
        f"Every number above is a row of `{METRICS_CSV}`. The report's own settings (draws, seed, "
        f"aggregations, easy levels) and the path and SHA-256 of every input file are in `{SETTINGS_JSON}`; "
        "the whole configuration, code and grader versions and library versions of the run are in "
        f"`{settings.get('provenance_file', 'provenance.json')}`" + (f" ({', '.join(versions)})." if versions else "."),
        "",
        *_sampling_backends(settings),
    ]


def render_markdown(df: pd.DataFrame, settings: dict, comparisons: pd.DataFrame | None = None,
                    gap: pd.DataFrame | None = None) -> str:
    dataset, aggregations = settings.get("dataset", "MATH"), settings["evaluator_aggregation"]
    primary = graded_by(df, settings)
    grader = primary["grader"].iloc[0] if len(primary) else settings.get("grader")
    lines = [f"# Easy-to-hard generalization on {dataset}", "", _intro(primary, settings), "",
             f"## Main result (largest N, `{grader}` grader)", "", _ci_note(settings), "",
             *_main_table(primary, aggregations), ""]
    if gap is not None and len(gap):
        lines += _gap_section(gap[gap["grader"] == grader])
    if comparisons is not None and len(comparisons):
        lines += _comparison_section(comparisons[comparisons["grader"] == grader], settings)
    for other in [g for g in dict.fromkeys(df["grader"]) if g != grader]:
        lines += [f"## Main result under the `{other}` grader (largest N)", "",
                  GRADER_NOTES.get(other, ""), "", *_main_table(graded_by(df, settings, other), aggregations), ""]
    for generator, rows in primary.groupby("generator", sort=False):
        lines += _generator_section(generator, rows, aggregations)
    return "\n".join(lines + _provenance(settings))


# ---------------------------------------------------------------------------------------------
# Plots

GREEDY_STYLE = dict(color="0.35", linestyle="--", linewidth=1.3)
MAJORITY_STYLE = dict(color="black", linestyle="-", marker="o")
# Colour = evaluator; line style and marker = method, so majority / weighted / best-of-N differ
# even in greyscale.
METHOD_STYLES = {"weighted": dict(linestyle="-", marker="s"), "best_of_n": dict(linestyle="-.", marker="^")}
EVALUATOR_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
AGGREGATION_COLORS = dict(zip(AGGREGATIONS, ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")))


def _group_titles(easy_levels) -> dict[str, str]:
    easy = sorted(easy_levels)
    hard = sorted(set(LEVELS) - set(easy))
    return {
        "easy": f"Easy (levels {', '.join(map(str, easy))})",
        "hard": f"Hard (levels {', '.join(map(str, hard))})",
        "all": "All levels",
    }


def _count_label(rows: pd.DataFrame) -> str:
    count = int(rows["num_problems"].max()) if not rows.empty else 0
    return f"{count:,} problems"


def _panels(df: pd.DataFrame, groups, width: float, height: float):
    """A Figure with one row of panels per generator and one column per group, and its axes."""
    generators = list(dict.fromkeys(df["generator"])) or [""]
    fig = Figure(figsize=(width * len(groups), height * len(generators) + 1.2), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot state, no display needed
    axes = fig.subplots(len(generators), len(groups), squeeze=False)
    return fig, generators, axes


def _each_panel(generators, axes, df: pd.DataFrame, groups, titles: dict[str, str]):
    """Yield (axis, generator rows, group rows, title, greedy rows) for every panel with
    problems, after drawing the greedy reference line; empty panels are marked and skipped."""
    for generator, row_axes in zip(generators, axes):
        rows = df[df["generator"] == generator]
        for ax, group in zip(row_axes, groups):
            part = rows[rows["levels"] == group]
            title = f"{generator}: {titles[group]}"
            if part.empty:
                ax.set_axis_off()
                ax.set_title(f"{title}\nno problems")
                continue
            greedy = select(part, "greedy")
            for row in greedy.itertuples():
                ax.axhline(100 * row.accuracy, label="Greedy", **GREEDY_STYLE)
            yield ax, rows, part, f"{title}, {_count_label(greedy)}"


def _evaluator_colors(df: pd.DataFrame) -> dict[str, str]:
    return {e: EVALUATOR_COLORS[i % len(EVALUATOR_COLORS)] for i, e in enumerate(_evaluators(df))}


def plot_accuracy_vs_n(df: pd.DataFrame, settings: dict, path: str | os.PathLike) -> None:
    """Accuracy vs N (log2 axis), one panel per group (easy / hard / all) and generator: majority,
    weighted and best-of-N per evaluator (its own step aggregation) with ±std bands; greedy dashed."""
    aggregations = settings["evaluator_aggregation"]
    fig, generators, axes = _panels(df, SUMMARY_GROUPS, width=5.0, height=4.3)
    titles = _group_titles(settings["easy_levels"])
    colors = _evaluator_colors(df)
    for ax, rows, part, title in _each_panel(generators, axes, df, SUMMARY_GROUPS, titles):
        ns = sorted(select(rows, "majority")["n"].unique())
        _curve(ax, select(part, "majority"), method_label("majority"), MAJORITY_STYLE)
        for evaluator, color in colors.items():
            for method, style in METHOD_STYLES.items():
                how = aggregation_for(aggregations, evaluator)
                _curve(ax, select(part, method, evaluator, how), method_label(method, evaluator, aggregation=how),
                       dict(style, color=color))
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("N (samples per problem)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for row_axes in axes:
        row_axes[0].set_ylabel("Accuracy (%)")
    _legend_below(fig, axes)
    fig.suptitle(f"{settings.get('dataset', 'MATH')} {settings.get('split', 'test')} accuracy vs. N "
                 f"(step aggregation: {_aggregations_text(settings).replace('`', '')}; band = ±1 std over "
                 f"{settings['num_draws']} draws)")
    fig.savefig(path, format="png")


def _curve(ax, rows: pd.DataFrame, label: str, style: dict) -> None:
    if rows.empty:
        return
    rows = rows.sort_values("n")
    x, y, std = rows["n"], 100 * rows["accuracy"], 100 * rows["std"]
    ax.plot(x, y, markersize=4, linewidth=1.6, label=label, **style)
    # Accuracy lives in [0, 100]; a band poking past the bounds would only mislead.
    ax.fill_between(x, (y - std).clip(0, 100), (y + std).clip(0, 100), color=style["color"], alpha=0.08, linewidth=0)


def _legend_below(fig: Figure, axes) -> None:
    """One legend for the figure, below the panels (never over the lines); entries de-duplicated."""
    entries = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 4),
                   frameon=False)


def plot_aggregations(df: pd.DataFrame, settings: dict, path: str | os.PathLike) -> None:
    """Best-of-N at the largest N: one bar per step aggregation, grouped by evaluator, easy and
    hard panels; majority@N and greedy as reference lines."""
    groups = ("easy", "hard")
    # Only policies with evaluator scores get a row of panels.
    scored = df[df["generator"].isin(df.loc[df["method"] == "best_of_n", "generator"])]
    if scored.empty:
        _placeholder(path, "No evaluator scores: no best-of-N to compare.")
        return
    fig, generators, axes = _panels(scored, groups, width=6.0, height=4.0)
    titles = _group_titles(settings["easy_levels"])
    for ax, rows, part, title in _each_panel(generators, axes, scored, groups, titles):
        max_n = _max_n(rows)
        _aggregation_bars(ax, part[(part["method"] == "best_of_n") & (part["n"] == max_n)], _evaluators(rows))
        for majority in select(part, "majority", n=max_n).itertuples():
            ax.axhline(100 * majority.accuracy, color="black", linewidth=1.3, label=method_label("majority", n=max_n))
        ax.set_title(title)
        ax.set_ylabel(f"Best-of-{max_n} accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(f"{settings.get('dataset', 'MATH')} {settings.get('split', 'test')}: best-of-N by step aggregation "
                 "(largest N)")
    fig.savefig(path, format="png")


def _placeholder(path: str | os.PathLike, message: str) -> None:
    """A small PNG saying why there is nothing to plot (the rule still declares the file)."""
    fig = Figure(figsize=(6, 1.5), dpi=150)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, message, ha="center", va="center")
    fig.savefig(path, format="png")


def _aggregation_bars(ax, rows: pd.DataFrame, evaluators: list[str]) -> None:
    aggregations = [how for how in AGGREGATIONS if how in set(rows["aggregation"])]
    width = 0.8 / max(len(aggregations), 1)
    for offset, how in enumerate(aggregations):
        values = rows[rows["aggregation"] == how].set_index("evaluator")["accuracy"]
        heights = [100 * values.get(e, np.nan) for e in evaluators]
        x = np.arange(len(evaluators)) + (offset - (len(aggregations) - 1) / 2) * width
        bars = ax.bar(x, heights, width, color=AGGREGATION_COLORS[how], label=f"aggregation: {how}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(evaluators)), evaluators)
    ax.margins(y=0.15)  # room for the value labels
