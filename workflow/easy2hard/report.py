"""The evaluation report: greedy decoding, majority voting, evaluator-weighted voting and
best-of-N accuracy by difficulty, with bootstrap CIs, paired comparisons and the supervision gap
recovered, written as CSV, Markdown, plots (`easy2hard.plots`) and a settings record.

The inputs (evaluated test samples and evaluator scores) are loaded and validated by
`easy2hard.scores`. Only test-split files are read; the hard gold answers reach this module only
through the evaluation outputs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from easy2hard.config import GOLD_SELECTED_SUFFIX
from easy2hard.io import atomic_output
from easy2hard.metrics import (
    AGGREGATIONS,
    LEVELS,
    accuracy_with_std,
    aggregation_for,
    best_of_n_matrix,
    bootstrap_ci,
    level_groups,
    maj_at_k_matrix,
    ns_for,
    paired_difference,
    selection_scores,
    weighted_vote_matrix,
)
from easy2hard.metrics import bootstrap_indices as _bootstrap_indices
from easy2hard.scores import Samples, aggregate_grid, load_greedy, load_samples, load_scores

COLUMNS = [
    "generator",
    "evaluator",
    "method",
    "aggregation",
    "n",
    "levels",
    "accuracy",
    "std",
    "num_problems",
    "grader",
    "ci_low",
    "ci_high",
]
ORACLE_SUFFIX = "_full"  # an oracle (the "Full" model) of a policy or evaluator: sft_full, prm_full, ...
GAP_COLUMNS = [
    "grader",
    "generator",
    "method",
    "evaluator",
    "oracle",
    "aggregation",
    "levels",
    "easy_to_hard",
    "oracle_accuracy",
    "majority",
    "recovered",
    "ci_low",
    "ci_high",
    "num_problems",
    "note",
]
COMPARISON_COLUMNS = [
    "grader",
    "comparison",
    "generator",
    "method",
    "evaluator",
    "aggregation",
    "versus_generator",
    "versus_method",
    "versus_evaluator",
    "versus_aggregation",
    "levels",
    "difference",
    "ci_low",
    "ci_high",
    "num_problems",
]
NOT_APPLICABLE = "-"  # evaluator / aggregation of the methods that use no evaluator
EVALUATOR_METHODS = ("weighted", "best_of_n")
SUMMARY_GROUPS = ("easy", "hard", "all")
LEVEL_GROUPS = tuple(f"level_{level}" for level in LEVELS)
SUBJECT_PREFIX = "subject:"
SETTINGS_KEYS = ("easy_levels", "num_draws", "seed", "evaluator_aggregation")
# The data source's name in titles; a Hugging Face source is named by its test dataset.
DATASET_TITLES = {"synthetic": "synthetic arithmetic", "math_jsonl": "MATH"}


def dataset_title(source: str, huggingface_test_name: str) -> str:
    return DATASET_TITLES.get(source) or huggingface_test_name


BASELINE = "sft"  # the policy the others are compared with (policy_vs_sft)
# What write_report writes, by the names of the report rule's outputs.
OUTPUT_KEYS = ("metrics", "comparisons", "gap", "markdown", "plot", "aggregations", "settings")


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


# ---------------------------------------------------------------------------------------------
# Aggregations


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
            greedy_samples = load_greedy(greedy[generator], samples, sampled_path, stored)
            masks = group_masks(samples, easy_levels)
            ns = ns_for(samples.num_samples) if name == grader else [samples.num_samples]
            if grids is None:  # the scores do not depend on the grader
                grids = {e: load_scores(path, samples, sampled_path) for e, path in scores.get(generator, {}).items()}

            def add(method, n, matrix, evaluator=NOT_APPLICABLE, aggregation=NOT_APPLICABLE):
                key = dict(generator=generator, evaluator=evaluator, method=method, aggregation=aggregation, n=n)
                at_n = method == "greedy" or n == samples.num_samples
                rows.extend(
                    {**row, "grader": name} for row in _group_rows(key, matrix, masks, bootstrap if at_n else None)
                )
                if at_n and per_problem is not None:
                    per_problem[(name, generator, method, evaluator, aggregation)] = PerProblem(
                        samples.unique_ids, matrix.mean(axis=1), masks
                    )

            add("greedy", 1, greedy_samples.correct.astype(float))
            for n in ns:
                add("majority", n, maj_at_k_matrix(samples.clusters, samples.correct, n, num_draws, seed))
            for evaluator, grid in grids.items():
                for how in aggregations:
                    ranked, weights = selection_scores(aggregate_grid(grid, how), samples.valid)
                    for n in ns:
                        add(
                            "weighted",
                            n,
                            weighted_vote_matrix(samples.clusters, samples.correct, weights, n, num_draws, seed),
                            evaluator,
                            how,
                        )
                        add(
                            "best_of_n",
                            n,
                            best_of_n_matrix(ranked, samples.correct, n, num_draws, seed),
                            evaluator,
                            how,
                        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _group_rows(key: dict, scores: np.ndarray, masks: dict[str, np.ndarray], bootstrap: Bootstrap | None) -> list[dict]:
    """One row per group; with `bootstrap`, the CI over problems of the per-problem scores (the
    mean over draws, i.e. the score itself at n = N)."""
    rows = []
    for name, mask in masks.items():
        accuracy, std, num_problems = accuracy_with_std(scores[mask])
        low = high = math.nan
        if bootstrap is not None:
            low, high = bootstrap_ci(
                scores[mask].mean(axis=1), bootstrap.indices(name, num_problems), bootstrap.confidence
            )
        rows.append(
            dict(key, levels=name, accuracy=accuracy, std=std, num_problems=num_problems, ci_low=low, ci_high=high)
        )
    return rows


def paired_comparisons(
    per_problem: dict[tuple, PerProblem], bootstrap: Bootstrap, aggregations: dict[str, str], baseline: str = BASELINE
) -> pd.DataFrame:
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
            difference, low, high = paired_difference(
                first.scores[shared][in_group],
                second.scores[other][in_group],
                bootstrap.indices(group, count),
                bootstrap.confidence,
            )
            rows.append(
                dict(
                    grader=grader,
                    comparison=kind,
                    generator=a[0],
                    method=a[1],
                    evaluator=a[2],
                    aggregation=a[3],
                    versus_generator=b[0],
                    versus_method=b[1],
                    versus_evaluator=b[2],
                    versus_aggregation=b[3],
                    levels=group,
                    difference=difference,
                    ci_low=low,
                    ci_high=high,
                    num_problems=count,
                )
            )

    keys = list(per_problem)
    graders = list(dict.fromkeys(key[0] for key in keys))
    generators = list(dict.fromkeys(key[1] for key in keys))
    majority = ("majority", NOT_APPLICABLE, NOT_APPLICABLE)
    greedy = ("greedy", NOT_APPLICABLE, NOT_APPLICABLE)
    for grader in graders:
        for generator in generators:
            evaluators = dict.fromkeys(
                key[3] for key in keys if key[:2] == (grader, generator) and key[2] in EVALUATOR_METHODS
            )
            for evaluator in evaluators:
                how = aggregation_for(aggregations, evaluator)
                for method in EVALUATOR_METHODS:
                    compare(
                        "evaluator_vs_majority", grader, (generator, method, evaluator, how), (generator, *majority)
                    )
                    if not evaluator.endswith(ORACLE_SUFFIX):
                        oracle = evaluator + ORACLE_SUFFIX
                        compare(
                            "easy_vs_oracle",
                            grader,
                            (generator, method, evaluator, how),
                            (generator, method, oracle, aggregation_for(aggregations, oracle)),
                        )
        for generator in generators:
            if generator.endswith(ORACLE_SUFFIX):
                continue
            for method in (greedy, majority):
                if generator != baseline:
                    compare(f"policy_vs_{baseline}", grader, (generator, *method), (baseline, *method))
                compare("easy_vs_oracle", grader, (generator, *method), (generator + ORACLE_SUFFIX, *method))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def supervision_gap(
    per_problem: dict[tuple, PerProblem], bootstrap: Bootstrap, aggregations: dict[str, str], baseline: str = BASELINE
) -> pd.DataFrame:
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
        if (
            how != aggregation_for(aggregations, evaluator)
            or oracle_key not in per_problem
            or voting_key not in per_problem
        ):
            continue
        easy, full, voting = (
            per_problem[(grader, generator, method, evaluator, how)],
            per_problem[oracle_key],
            per_problem[voting_key],
        )
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
            rows.append(
                dict(
                    grader=grader,
                    generator=generator,
                    method=method,
                    evaluator=evaluator,
                    oracle=oracle,
                    aggregation=how,
                    levels=group,
                    easy_to_hard=float(easy.scores[mask].mean()),
                    oracle_accuracy=float(full.scores[mask].mean()),
                    majority=float(voting.scores[mask].mean()),
                    recovered=recovered,
                    ci_low=low,
                    ci_high=high,
                    num_problems=count,
                    note=note,
                )
            )
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def select(
    df: pd.DataFrame,
    method: str,
    evaluator: str = NOT_APPLICABLE,
    aggregation: str = NOT_APPLICABLE,
    n: int | None = None,
) -> pd.DataFrame:
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


def evaluators_in(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(rows.loc[rows["method"].isin(EVALUATOR_METHODS), "evaluator"]))


def _methods_at_n(rows: pd.DataFrame, n: int, aggregations: dict[str, str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of greedy and of every method at n, each evaluator with its own step
    aggregation, in the paper's order: greedy, majority, then weighted and best-of-N per evaluator."""
    methods = [
        (method_label("greedy"), select(rows, "greedy")),
        (method_label("majority", n=n), select(rows, "majority", n=n)),
    ]
    for evaluator in evaluators_in(rows):
        how = aggregation_for(aggregations, evaluator)
        for method in EVALUATOR_METHODS:
            methods.append((method_label(method, evaluator, n, how), select(rows, method, evaluator, how, n)))
    return methods


# ---------------------------------------------------------------------------------------------
# Writing


def write_report(
    df: pd.DataFrame,
    paths: Mapping[str, str | os.PathLike],
    settings: dict,
    comparisons: pd.DataFrame | None = None,
    gap: pd.DataFrame | None = None,
) -> None:
    """Write the report's files, each atomically, to `paths`: {key: path} for every key of
    OUTPUT_KEYS (the report rule's output names): metrics, comparisons and gap (CSV), markdown,
    plot (accuracy vs N) and aggregations (best-of-N by step aggregation) PNGs, and settings (JSON).

    `settings` must hold what the numbers depend on (SETTINGS_KEYS; optional "dataset", "split",
    "aggregations", "inputs", "upstream", "bootstrap"); it is written as the settings file and
    summarised in the markdown's provenance paragraph. `comparisons` (COMPARISON_COLUMNS) are the
    paired differences of `paired_comparisons`.
    """
    missing = [key for key in SETTINGS_KEYS if key not in settings]
    if missing:
        raise ValueError(f"report settings lack {', '.join(missing)}")
    if set(paths) != set(OUTPUT_KEYS):
        raise ValueError(
            f"report outputs: expected paths for {', '.join(OUTPUT_KEYS)}, got {', '.join(paths) or 'none'}"
        )
    from easy2hard import plots  # plots draws with this module's table helpers (and loads matplotlib)

    comparisons = comparisons if comparisons is not None else pd.DataFrame(columns=COMPARISON_COLUMNS)
    gap = gap if gap is not None else pd.DataFrame(columns=GAP_COLUMNS)
    names = {key: Path(path).name for key, path in paths.items()}  # what report.md cites
    with atomic_output(paths["metrics"]) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(paths["comparisons"]) as tmp:
        comparisons.to_csv(tmp, index=False)
    with atomic_output(paths["gap"]) as tmp:
        gap.to_csv(tmp, index=False)
    with atomic_output(paths["markdown"]) as tmp:
        tmp.write_text(render_markdown(df, settings, comparisons, gap, files=names), encoding="utf-8")
    with atomic_output(paths["plot"]) as tmp:
        plots.plot_accuracy_vs_n(graded_by(df, settings), settings, tmp)
    with atomic_output(paths["aggregations"]) as tmp:
        plots.plot_aggregations(graded_by(df, settings), settings, tmp)
    with atomic_output(paths["settings"]) as tmp:
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


def largest_n(rows: pd.DataFrame) -> int:
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
        body += [
            [name, label, *_cells(part, SUMMARY_GROUPS)]
            for label, part in _methods_at_n(rows, largest_n(rows), aggregations)
        ]
        body.append([name, "Problems", *_counts(select(rows, "greedy"), SUMMARY_GROUPS)])
    return _markdown_table(["Policy", "Method", *SUMMARY_GROUPS], body, text_columns=2)


def _ci_note(settings: dict) -> str:
    bootstrap = settings.get("bootstrap")
    if not bootstrap:
        return ""
    return (
        f"[low, high]: the {100 * bootstrap['confidence']:.0f} % confidence interval of the accuracy over test "
        f"problems (paired bootstrap, {bootstrap['resamples']:,} resamples of the problems of each group, seed "
        f"{bootstrap['seed']}; the same resamples for every method and policy). It says how much the number would "
        "move on another draw of problems of the same kind; the ± of the curves below is something else, the "
        "variation over subsets of the samples."
    )


def _gap_section(gap: pd.DataFrame, csv_name: str) -> list[str]:
    """Supervision gap recovered: one row per easy-to-hard evaluator and method, easy / hard / all."""
    body = []
    for (method, evaluator, oracle, how), rows in gap.groupby(
        ["method", "evaluator", "oracle", "aggregation"], sort=False
    ):
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
    return [
        f"### Supervision gap recovered ({generator}'s samples)",
        "",
        "(easy-to-hard − majority@N) / (oracle − majority@N): the share of what supervision on every level "
        "adds to voting that the evaluator trained on easy problems alone achieves (100 %: as good as the "
        "oracle; 0 %: no better than voting). n/a: the oracle does not beat voting by one problem, so the ratio "
        f"is undefined (`{csv_name}` says why). [low, high]: paired bootstrap over problems.",
        "",
        *_markdown_table(["", *SUMMARY_GROUPS], body),
        "",
    ]


def _comparison_section(comparisons: pd.DataFrame, settings: dict, csv_name: str) -> list[str]:
    """The paired differences (points) with their CIs, easy / hard / all; bold: the CI excludes 0."""
    body = []
    keys = [
        "comparison",
        "generator",
        "method",
        "evaluator",
        "aggregation",
        "versus_generator",
        "versus_method",
        "versus_evaluator",
        "versus_aggregation",
    ]
    for key, rows in comparisons.groupby(keys, sort=False):
        (
            kind,
            generator,
            method,
            evaluator,
            aggregation,
            versus_generator,
            versus_method,
            versus_evaluator,
            versus_aggregation,
        ) = key
        label = method_label(method, evaluator, "N", None if aggregation == NOT_APPLICABLE else aggregation)
        versus = method_label(
            versus_method, versus_evaluator, "N", None if versus_aggregation == NOT_APPLICABLE else versus_aggregation
        )
        what = f"{label} − {versus}" if versus_generator == generator else f"{label} − {versus_generator} {versus}"
        by_group = {row.levels: row for row in rows.itertuples()}
        body.append(
            [
                policy_label(generator),
                what,
                *[_difference(by_group[g]) if g in by_group else "–" for g in SUMMARY_GROUPS],
            ]
        )
    if not body:
        return []
    confidence = 100 * settings.get("bootstrap", {}).get("confidence", 0.95)
    return [
        f"### Paired differences (points, {confidence:.0f} % CI over problems; bold: the CI excludes 0)",
        "",
        "Each difference compares two methods on the same problems with the same bootstrap resamples "
        f"(a paired comparison). `{csv_name}` holds every group and grader.",
        "",
        *_markdown_table(["Policy", "Difference", *SUMMARY_GROUPS], body, text_columns=2),
        "",
    ]


def _generator_section(generator: str, rows: pd.DataFrame, aggregations: dict[str, str]) -> list[str]:
    greedy, majority, max_n = select(rows, "greedy"), select(rows, "majority"), largest_n(rows)
    curve = [["Greedy", *_cells(greedy, SUMMARY_GROUPS)]]
    curve += [
        [f"maj@{n}", *_cells(select(rows, "majority", n=n), SUMMARY_GROUPS, with_std=True)]
        for n in sorted(majority["n"].unique())
    ]
    curve.append(["Problems", *_counts(greedy, SUMMARY_GROUPS)])
    lines = [
        f"## {policy_label(generator)}",
        "",
        "Greedy (with its 95 % CI over problems) and majority voting over n samples "
        "(mean ± std over random sample subsets: the variation over sample subsets, not over problems):",
        "",
        *_markdown_table(["", *SUMMARY_GROUPS], curve),
        "",
    ]
    subjects = [g for g in greedy["levels"] if g.startswith(SUBJECT_PREFIX)]
    for title, groups, names in [
        ("Per level", LEVEL_GROUPS, LEVEL_GROUPS),
        ("Per subject (all levels)", subjects, [g[len(SUBJECT_PREFIX) :] for g in subjects]),
    ]:
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


def _intro(df: pd.DataFrame, settings: dict, metrics_name: str) -> str:
    easy = sorted(settings["easy_levels"])
    hard = sorted(set(LEVELS) - set(easy))
    sample_counts = "/".join(str(n) for n in sorted({largest_n(rows) for _, rows in df.groupby("generator")}))
    return (
        f"Accuracy (%) on the {settings.get('dataset', 'MATH')} {settings.get('split', 'test')} split. "
        f"Each policy has one greedy solution and N = {sample_counts} sampled solutions per problem. "
        "**Majority@n** picks the most frequent answer among n samples (equivalent answers grouped by the "
        "grader); **Weighted@n (evaluator)** picks the answer with the largest sum of evaluator scores; "
        "**Best-of-n (evaluator)** picks the sample with the highest score. A solution's score aggregates "
        f"its step scores with each evaluator's own aggregation in the tables and plot ({aggregations_text(settings)}; "
        f"{metrics_name} also holds {', '.join(settings.get('aggregations', []))}); a truncated solution or one "
        "without an answer ranks last in best-of-n and weighs nothing in weighted voting. "
        f"Easy = levels {', '.join(map(str, easy))}; hard = levels {', '.join(map(str, hard))}. "
        f"For n < N, accuracy is the mean over {settings['num_draws']} random size-n subsets of each problem's "
        f"samples (seed {settings['seed']}; the same subsets for every method) and ± is the standard deviation of "
        "the dataset accuracy across those draws; n = N uses all samples. Ties count as the fraction of the tied "
        "answers (samples) that are correct; samples without an answer never vote, and a problem without any "
        "answer scores 0."
    )


def aggregations_text(settings: dict) -> str:
    return ", ".join(f"{evaluator} `{how}`" for evaluator, how in settings["evaluator_aggregation"].items())


def _sampling_backends(settings: dict) -> list[str]:
    """Which back end sampled each policy's test solutions (from the samples' provenance), and a
    warning when any fell back to generate on a model the engine is meant to run."""
    records = {
        (g, kind): record
        for g, by_kind in (settings.get("sampling") or {}).items()
        for kind, record in by_kind.items()
        if record
    }
    if not records:
        return []
    described = "; ".join(f"{g} {kind}: {record['backend']}" for (g, kind), record in records.items())
    lines = [
        "Sampling back end of the test solutions (engine: `easy2hard.engine`; hf: transformers `generate`): "
        f"{described}."
    ]
    unexpected = sorted({f["reason"] for record in records.values() for f in record["fallbacks"] if not f["expected"]})
    if unexpected:
        lines.append(
            "**Warning: some samples fell back to `generate` on a model the sampling engine is meant to "
            f"run** ({'; '.join(unexpected)})."
        )
    return [" ".join(lines), ""]


def _provenance(settings: dict, files: Mapping[str, str]) -> list[str]:
    upstream = settings.get("upstream") or {}
    versions = [
        f"{name} `{upstream[key]}`"
        for name, key in (("code version", "code_version"), ("grader version", "grader_version"))
        if upstream.get(key)
    ]
    return [
        "## Provenance",
        "",
        f"Every number above is a row of `{files['metrics']}`. The report's own settings (draws, seed, "
        f"aggregations, easy levels) and the path and SHA-256 of every input file are in `{files['settings']}`; "
        "the whole configuration, code and grader versions and library versions of the run are in "
        f"`{settings.get('provenance_file', 'provenance.json')}`" + (f" ({', '.join(versions)})." if versions else "."),
        "",
        *_sampling_backends(settings),
    ]


def render_markdown(
    df: pd.DataFrame,
    settings: dict,
    comparisons: pd.DataFrame | None = None,
    gap: pd.DataFrame | None = None,
    *,
    files: Mapping[str, str],
) -> str:
    """report.md; `files`: the names of the other outputs it cites, by key (metrics, comparisons,
    gap, settings)."""
    dataset, aggregations = settings.get("dataset", "MATH"), settings["evaluator_aggregation"]
    primary = graded_by(df, settings)
    grader = primary["grader"].iloc[0] if len(primary) else settings.get("grader")
    lines = [
        f"# Easy-to-hard generalization on {dataset}",
        "",
        _intro(primary, settings, files["metrics"]),
        "",
        f"## Main result (largest N, `{grader}` grader)",
        "",
        _ci_note(settings),
        "",
        *_main_table(primary, aggregations),
        "",
    ]
    if gap is not None and len(gap):
        lines += _gap_section(gap[gap["grader"] == grader], files["gap"])
    if comparisons is not None and len(comparisons):
        lines += _comparison_section(comparisons[comparisons["grader"] == grader], settings, files["comparisons"])
    for other in [g for g in dict.fromkeys(df["grader"]) if g != grader]:
        lines += [
            f"## Main result under the `{other}` grader (largest N)",
            "",
            GRADER_NOTES.get(other, ""),
            "",
            *_main_table(graded_by(df, settings, other), aggregations),
            "",
        ]
    for generator, rows in primary.groupby("generator", sort=False):
        lines += _generator_section(generator, rows, aggregations)
    return "\n".join(lines + _provenance(settings, files))
