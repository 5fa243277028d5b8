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
from easy2hard.io import DataError, atomic_output, read_jsonl
from easy2hard.report import read_step_scores

COLUMNS = ["evaluator", "aggregation", "levels", "auc", "threshold_accuracy", "best_of_n", "n", "num_problems", "num_samples"]


def load_scored(eval_path: str, scores_path: str) -> pd.DataFrame:
    """One row per sample: level, correct, answer_cluster, step_scores (joined on id and index)."""
    graded = read_jsonl(eval_path, required=("unique_id", "sample_index", "level", "correct", "answer_cluster"))
    scores = read_step_scores(scores_path)  # validated, shared with the test report
    rows = []
    for row in graded:
        key = (row["unique_id"], row["sample_index"])
        if key not in scores:
            raise DataError(f"{scores_path}: no scores for {key[0]} sample {key[1]} of {eval_path}")
        rows.append({**{k: row[k] for k in ("unique_id", "sample_index", "level", "correct", "answer_cluster")}, "step_scores": scores[key]})
    return pd.DataFrame(rows)


def _question_matrix(frame: pd.DataFrame, column: str) -> np.ndarray:
    """(questions, N) array of `column`, questions in unique_id order, samples in index order."""
    ordered = frame.sort_values(["unique_id", "sample_index"])
    counts = ordered.groupby("unique_id").size()
    if counts.nunique() != 1:
        raise DataError("every question needs the same number of samples")
    return np.array(ordered[column].tolist(), dtype=float).reshape(len(counts), counts.iloc[0])


def evaluator_quality(scored: dict[str, pd.DataFrame], easy_levels) -> pd.DataFrame:
    """Rows of COLUMNS for every evaluator x aggregation x level group (best-of-N over all N)."""
    rows = []
    for group, levels in metrics.level_groups(easy_levels).items():
        for name, frame in scored.items():
            part = frame[frame["level"].isin(levels)]
            if part.empty:
                continue
            correct = _question_matrix(part, "correct")
            n = correct.shape[1]
            for how in metrics.AGGREGATIONS:
                aggregated = part.assign(score=[metrics.aggregate_steps(s, how) for s in part["step_scores"]])
                score_matrix = _question_matrix(aggregated, "score")
                rows.append(
                    {
                        "evaluator": name,
                        "aggregation": how,
                        "levels": group,
                        "auc": metrics.roc_auc(aggregated["score"], aggregated["correct"]),
                        "threshold_accuracy": float(((aggregated["score"] >= 0.5) == aggregated["correct"]).mean()),
                        "best_of_n": float(np.mean([metrics.best_of_n(s, c) for s, c in zip(score_matrix, correct)])),
                        "n": n,
                        "num_problems": len(correct),
                        "num_samples": len(part),
                    }
                )
        # References that need no evaluator: majority voting and the average sample.
        any_frame = next(iter(scored.values()))
        part = any_frame[any_frame["level"].isin(levels)]
        if not part.empty:
            correct = _question_matrix(part, "correct")
            clusters = _question_matrix(part, "answer_cluster").astype(int)
            base = {"aggregation": "-", "levels": group, "auc": None, "threshold_accuracy": None, "n": correct.shape[1], "num_problems": len(correct), "num_samples": len(part)}
            rows.append({**base, "evaluator": "majority", "best_of_n": float(np.mean([metrics.majority_vote(c, k) for c, k in zip(clusters, correct)]))})
            rows.append({**base, "evaluator": "pass@1", "best_of_n": float(correct.mean())})
    return pd.DataFrame(rows, columns=COLUMNS)


def render_markdown(df: pd.DataFrame, default_aggregation: str = "min") -> str:
    """Two tables: AUC by level group per evaluator x aggregation, and best-of-N accuracy."""
    groups = [g for g in ("easy", "hard", "all") if g in set(df["levels"])]
    lines = [
        "# Evaluator quality (validation)",
        "",
        "Evaluators were trained with supervision on easy problems only; here the validation samples",
        "are graded against gold answers of every level to see how well they judge hard problems.",
        f"Default step aggregation: {default_aggregation}.",
        "",
        "## AUC: telling correct from incorrect final answers",
        "",
        "| evaluator | aggregation | " + " | ".join(groups) + " |",
        "|---|---|" + "---:|" * len(groups),
    ]
    judged = df[df["aggregation"] != "-"]  # evaluators only; the references have no AUC
    for (name, how), rows in judged.groupby(["evaluator", "aggregation"], sort=False):
        cells = [_fmt(rows.loc[rows["levels"] == g, "auc"]) for g in groups]
        lines.append(f"| {name} | {how} | " + " | ".join(cells) + " |")
    n = int(df["n"].max()) if not df.empty else 0
    lines += ["", f"## Best-of-{n} accuracy (%)", "", "| selector | aggregation | " + " | ".join(groups) + " |", "|---|---|" + "---:|" * len(groups)]
    for (name, how), rows in df.groupby(["evaluator", "aggregation"], sort=False):
        cells = [_fmt(rows.loc[rows["levels"] == g, "best_of_n"], percent=True) for g in groups]
        lines.append(f"| {name} | {how} | " + " | ".join(cells) + " |")
    counts = df.drop_duplicates("levels").set_index("levels")
    lines += ["", "Problems: " + ", ".join(f"{g} {int(counts.loc[g, 'num_problems'])}" for g in groups), ""]
    return "\n".join(lines)


def _fmt(values: pd.Series, percent: bool = False) -> str:
    if values.empty or values.isna().all():
        return "–"
    value = float(values.iloc[0])
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def write(df: pd.DataFrame, out_csv: str | os.PathLike, out_md: str | os.PathLike, default_aggregation: str) -> None:
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(out_md) as tmp:
        Path(tmp).write_text(render_markdown(df, default_aggregation), encoding="utf-8")


def scored_frames(pairs: dict[str, tuple[str, str]]) -> dict[str, pd.DataFrame]:
    """{evaluator: (eval_path, scores_path)} -> {evaluator: joined frame}."""
    return {name: load_scored(eval_path, scores_path) for name, (eval_path, scores_path) in pairs.items()}

