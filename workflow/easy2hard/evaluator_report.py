"""Evaluator quality on validation samples, by level: how well each evaluator tells correct from
incorrect final answers (AUC, accuracy at threshold 0.5) and best-of-N accuracy for each step
aggregation, next to majority voting and the average sample (pass@1) for reference.

This is evaluation: it reads the gold-graded validation samples (hard levels included)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from easy2hard import metrics
from easy2hard.io import atomic_output
from easy2hard.scores import Samples, aggregate_grid, load_samples, load_scores

COLUMNS = [
    "evaluator",
    "aggregation",
    "levels",
    "auc",
    "threshold_accuracy",
    "best_of_n",
    "n",
    "num_problems",
    "num_samples",
    "num_correct",
]
Grid = list[list[list[float]]]  # per question, per sample: its step scores


def load_inputs(
    eval_path: str | os.PathLike, score_paths: dict[str, str | os.PathLike]
) -> tuple[Samples, dict[str, Grid]]:
    """The graded samples and each evaluator's step scores, loaded and joined exactly as the test
    report does (same checks: one N per question, every sample scored, no stale score rows)."""
    samples = load_samples(eval_path)
    return samples, {name: load_scores(path, samples, eval_path) for name, path in score_paths.items()}


def evaluator_quality(samples: Samples, grids: dict[str, Grid], easy_levels) -> pd.DataFrame:
    """Rows of COLUMNS for every evaluator x aggregation x level group (best-of-N over all N),
    then the majority-vote and pass@1 references of each group."""
    aggregated = {
        (name, how): aggregate_grid(grid, how) for name, grid in grids.items() for how in metrics.AGGREGATIONS
    }
    rows = []
    for group, levels in metrics.level_groups(easy_levels).items():
        mask = np.isin(samples.levels, sorted(levels))
        if not mask.any():
            continue
        correct = samples.correct[mask]
        base = {
            "levels": group,
            "n": samples.num_samples,
            "num_problems": int(mask.sum()),
            "num_samples": int(correct.size),
            "num_correct": int(correct.sum()),
        }
        for (name, how), all_scores in aggregated.items():
            scores = all_scores[mask]
            ranked, _ = metrics.selection_scores(scores, samples.valid[mask])  # truncated / no answer: last
            rows.append(
                {
                    **base,
                    "evaluator": name,
                    "aggregation": how,
                    "auc": metrics.roc_auc(scores.ravel(), correct.ravel()),
                    "threshold_accuracy": float(((scores >= 0.5) == correct).mean()),
                    "best_of_n": float(np.mean([metrics.best_of_n(s, c) for s, c in zip(ranked, correct)])),
                }
            )
        # References that need no evaluator: majority voting and the average sample.
        majority = np.mean([metrics.majority_vote(k, c) for k, c in zip(samples.clusters[mask], correct)])
        references = {"aggregation": "-", "auc": None, "threshold_accuracy": None}
        rows.append({**base, **references, "evaluator": "majority", "best_of_n": float(majority)})
        rows.append({**base, **references, "evaluator": "pass@1", "best_of_n": float(correct.mean())})
    return pd.DataFrame(rows, columns=COLUMNS)


def render_markdown(df: pd.DataFrame, aggregations: dict[str, str]) -> str:
    """Two tables: AUC by level group per evaluator x aggregation, and best-of-N accuracy; each
    evaluator's own aggregation (`aggregations`, as configured) is marked with *."""
    groups = [g for g in ("easy", "hard", "all") if g in set(df["levels"])]
    lines = [
        "# Evaluator quality (validation)",
        "",
        "Evaluators were trained with supervision on easy problems only; here the validation samples",
        "are graded against gold answers of every level to see how well they judge hard problems.",
        "Step aggregation of each evaluator in the pipeline (marked *): "
        + ", ".join(f"{name} {how}" for name, how in aggregations.items())
        + ".",
        "",
        "## AUC: telling correct from incorrect final answers",
        "",
        "| evaluator | aggregation | " + " | ".join(groups) + " |",
        "|---|---|" + "---:|" * len(groups),
    ]
    judged = df[df["aggregation"] != "-"]  # evaluators only; the references have no AUC
    counts_by_group = df.drop_duplicates("levels").set_index("levels")
    for (name, how), rows in judged.groupby(["evaluator", "aggregation"], sort=False):
        cells = [_fmt(rows.loc[rows["levels"] == g, "auc"]) for g in groups]
        lines.append(f"| {name} | {_marked(how, name, aggregations)} | " + " | ".join(cells) + " |")
    lines += [
        _undefined_auc(g, counts_by_group.loc[g])
        for g in groups
        if judged.loc[judged["levels"] == g, "auc"].isna().all()
    ]
    n = int(df["n"].max()) if not df.empty else 0
    lines += [
        "",
        f"## Best-of-{n} accuracy (%)",
        "",
        "| selector | aggregation | " + " | ".join(groups) + " |",
        "|---|---|" + "---:|" * len(groups),
    ]
    for (name, how), rows in df.groupby(["evaluator", "aggregation"], sort=False):
        cells = [_fmt(rows.loc[rows["levels"] == g, "best_of_n"], percent=True) for g in groups]
        lines.append(f"| {name} | {_marked(how, name, aggregations)} | " + " | ".join(cells) + " |")
    lines += ["", "Problems: " + ", ".join(f"{g} {int(counts_by_group.loc[g, 'num_problems'])}" for g in groups), ""]
    return "\n".join(lines)


def _undefined_auc(group: str, counts: pd.Series) -> str:
    """The note under the AUC table for a level group where AUC is undefined (one class only)."""
    correct, total = int(counts["num_correct"]), int(counts["num_samples"])
    reason = "no validation sample is correct" if correct == 0 else "every validation sample is correct"
    return (
        f"\nAUC on {group} problems is undefined (–): {reason} ({correct} of {total}), so there is nothing"
        " to tell apart."
    )


def _marked(how: str, evaluator: str, aggregations: dict[str, str]) -> str:
    if how == "-":
        return how
    return f"{how} *" if metrics.aggregation_for(aggregations, evaluator) == how else how


def _fmt(values: pd.Series, percent: bool = False) -> str:
    if values.empty or values.isna().all():
        return "–"
    value = float(values.iloc[0])
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def write(
    df: pd.DataFrame, out_csv: str | os.PathLike, out_md: str | os.PathLike, aggregations: dict[str, str]
) -> None:
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(out_md) as tmp:
        Path(tmp).write_text(render_markdown(df, aggregations), encoding="utf-8")
