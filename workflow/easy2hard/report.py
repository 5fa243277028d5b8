"""The evaluation report: greedy and maj@n accuracy by difficulty, as CSV, Markdown and a plot.

Inputs are the evaluation stage's JSONL files, one row per (question, sample):
``unique_id, level, subject, sample_index, answer, answer_cluster, correct``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from easy2hard.io import DataError, atomic_output, read_jsonl
from easy2hard.metrics import LEVELS, accuracy_with_std, level_groups, maj_at_k_matrix, ns_for

SAMPLE_FIELDS = ("unique_id", "level", "subject", "sample_index", "answer", "answer_cluster", "correct")
COLUMNS = ["generator", "method", "n", "levels", "accuracy", "std", "num_problems"]
SUMMARY_GROUPS = ("easy", "hard", "all")
LEVEL_GROUPS = tuple(f"level_{level}" for level in LEVELS)
PROVENANCE_KEYS = ("easy_levels", "num_draws", "seed")


@dataclass(frozen=True)
class Samples:
    """One generator's samples as arrays; questions sorted by unique_id."""

    unique_ids: list[str]
    levels: np.ndarray  # (questions,)
    clusters: np.ndarray  # (questions, samples)
    correct: np.ndarray  # (questions, samples), bool

    @property
    def num_samples(self) -> int:
        return self.clusters.shape[1]


# ---------------------------------------------------------------------------------------------
# Loading


def load_samples(path: str | os.PathLike) -> Samples:
    """Read and validate an evaluation JSONL file; every question must have the same sample count."""
    path = Path(path)
    questions: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in read_jsonl(path, required=SAMPLE_FIELDS):
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
        clusters=np.array([[row["answer_cluster"] for row in samples] for samples in rows]),
        correct=np.array([[row["correct"] for row in samples] for samples in rows], dtype=bool),
    )


def _is_int(value) -> bool:
    # bool is an int subclass in Python, but true/false is never a valid level or index.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_row(path: Path, row: dict) -> None:
    where = f"{path}: question {row['unique_id']!r}"
    if not isinstance(row["unique_id"], str):
        raise DataError(f"{path}: unique_id must be a string, got {row['unique_id']!r}")
    if not _is_int(row["level"]) or row["level"] not in LEVELS:
        raise DataError(f"{where}: level must be one of {list(LEVELS)}, got {row['level']!r}")
    if not _is_int(row["sample_index"]) or row["sample_index"] < 0:
        raise DataError(f"{where}: sample_index must be a non-negative integer, got {row['sample_index']!r}")
    if not _is_int(row["answer_cluster"]) or row["answer_cluster"] < -1:
        raise DataError(f"{where}: answer_cluster must be an integer >= -1, got {row['answer_cluster']!r}")
    if not isinstance(row["correct"], bool):
        raise DataError(f"{where}: correct must be true or false, got {row['correct']!r}")


def _check_question(path: Path, uid: str, samples: list[dict | None]) -> None:
    """Sample indices are 0..N-1, the level is shared, equivalent answers agree on correctness."""
    where = f"{path}: question {uid!r}"
    if any(row is None for row in samples):
        raise DataError(f"{where}: sample indices are not 0..{len(samples) - 1}")
    if len({row["level"] for row in samples}) > 1:
        raise DataError(f"{where}: samples disagree on the level")
    verdicts: dict[int, bool] = {}
    for row in samples:
        cluster = row["answer_cluster"]
        if cluster >= 0 and verdicts.setdefault(cluster, row["correct"]) != row["correct"]:
            raise DataError(f"{where}: answer_cluster {cluster} holds both correct and incorrect answers")


# ---------------------------------------------------------------------------------------------
# Metrics


def compute_metrics(
    sampled: dict[str, str | os.PathLike],
    greedy: dict[str, str | os.PathLike],
    easy_levels,
    num_draws: int,
    seed: int,
) -> pd.DataFrame:
    """Greedy and maj@n accuracy of every generator by level group, one row per number (long format).

    Columns: generator, method ("greedy" | "majority"), n, levels (group name), accuracy and std
    (fractions; std across the random subset draws, 0 for greedy and for n = N), num_problems.
    Groups without problems are left out.
    """
    if set(sampled) != set(greedy):
        raise ValueError(f"sampled and greedy name different generators: {sorted(sampled)} vs {sorted(greedy)}")
    groups = level_groups(easy_levels)
    rows = []
    for generator, sampled_path in sampled.items():
        samples = load_samples(sampled_path)
        greedy_samples = _load_greedy(greedy[generator], samples, sampled_path)
        greedy_scores = greedy_samples.correct.astype(float)
        rows += _group_rows(generator, "greedy", 1, greedy_scores, greedy_samples.levels, groups)
        for n in ns_for(samples.num_samples):
            scores = maj_at_k_matrix(samples.clusters, samples.correct, n, num_draws, seed)
            rows += _group_rows(generator, "majority", n, scores, samples.levels, groups)
    return pd.DataFrame(rows, columns=COLUMNS)


def _load_greedy(path, samples: Samples, sampled_path) -> Samples:
    """Greedy decodes: one sample per question, the same questions as the sampled file."""
    greedy = load_samples(path)
    if greedy.num_samples != 1:
        raise DataError(f"{path}: greedy file must hold one sample per question, found {greedy.num_samples}")
    if greedy.unique_ids != samples.unique_ids:
        raise DataError(f"{path}: greedy questions differ from those in {sampled_path}")
    return greedy


def _group_rows(generator: str, method: str, n: int, scores: np.ndarray, levels, groups) -> list[dict]:
    rows = []
    for name, members in groups.items():
        mask = np.isin(levels, sorted(members))
        if not mask.any():
            continue
        accuracy, std, num_problems = accuracy_with_std(scores[mask])
        rows.append(dict(generator=generator, method=method, n=n, levels=name,
                         accuracy=accuracy, std=std, num_problems=num_problems))
    return rows


# ---------------------------------------------------------------------------------------------
# Writing


def write_report(df: pd.DataFrame, out_dir: str | os.PathLike, provenance: dict) -> None:
    """Write metrics.csv, report.md and accuracy_vs_n.png into `out_dir`, each atomically.

    `provenance` must hold the settings the numbers depend on ("easy_levels", "num_draws",
    "seed"; optional "split", default "test"); the whole dict is embedded in report.md.
    """
    missing = [key for key in PROVENANCE_KEYS if key not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {', '.join(missing)}")
    out_dir = Path(out_dir)
    with atomic_output(out_dir / "metrics.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(out_dir / "report.md") as tmp:
        tmp.write_text(render_markdown(df, provenance), encoding="utf-8")
    with atomic_output(out_dir / "accuracy_vs_n.png") as tmp:
        plot_accuracy_vs_n(df, provenance["easy_levels"], tmp, provenance.get("dataset", "MATH"))


def _percent(row, with_std: bool) -> str:
    text = f"{100 * row.accuracy:.1f}"
    return f"{text} ± {100 * row.std:.1f}" if with_std else text


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _table_row(label: str, rows: pd.DataFrame, groups, with_std: bool) -> list[str]:
    by_group = {row.levels: row for row in rows.itertuples()}
    return [label] + [_percent(by_group[g], with_std) if g in by_group else "–" for g in groups]


def _counts_row(rows: pd.DataFrame, groups) -> list[str]:
    counts = dict(zip(rows["levels"], rows["num_problems"]))
    return ["Problems"] + [f"{counts[g]:,}" if g in counts else "0" for g in groups]


def _generator_section(generator: str, rows: pd.DataFrame) -> list[str]:
    greedy = rows[rows["method"] == "greedy"]
    majority = rows[rows["method"] == "majority"]
    max_n = int(majority["n"].max())
    body = [_table_row("Greedy", greedy, SUMMARY_GROUPS, with_std=False)]
    body += [
        _table_row(f"maj@{n}", majority[majority["n"] == n], SUMMARY_GROUPS, with_std=True)
        for n in sorted(majority["n"].unique())
    ]
    body.append(_counts_row(greedy, SUMMARY_GROUPS))
    per_level = [
        _table_row("Greedy", greedy, LEVEL_GROUPS, with_std=False),
        _table_row(f"maj@{max_n}", majority[majority["n"] == max_n], LEVEL_GROUPS, with_std=True),
        _counts_row(greedy, LEVEL_GROUPS),
    ]
    return [
        f"## {generator}",
        "",
        *_markdown_table(["", *SUMMARY_GROUPS], body),
        "",
        f"Per level, greedy and maj@{max_n}:",
        "",
        *_markdown_table(["", *LEVEL_GROUPS], per_level),
        "",
    ]


def render_markdown(df: pd.DataFrame, provenance: dict) -> str:
    easy = sorted(provenance["easy_levels"])
    hard = sorted(set(LEVELS) - set(easy))
    max_ns = df[df["method"] == "majority"].groupby("generator")["n"].max()
    sample_counts = "/".join(str(n) for n in sorted(set(max_ns)))
    intro = (
        f"Accuracy (%) on the {provenance.get('dataset', 'MATH')} {provenance.get('split', 'test')} split of each generator's greedy "
        f"solution and of majority voting over n of its N = {sample_counts} sampled solutions (maj@n). "
        f"Easy = levels {', '.join(map(str, easy))}; hard = levels {', '.join(map(str, hard))}. "
        f"maj@n is the mean over {provenance['num_draws']} random size-n subsets of each problem's "
        f"samples (seed {provenance['seed']}), and ± is the standard deviation of the dataset accuracy "
        "across those draws; maj@N uses all samples (one draw). Ties between equally frequent answers "
        "count as the fraction of tied answers that are correct."
    )
    lines = [f"# Easy-to-hard generalization on {provenance.get('dataset', 'MATH')}", "", intro, ""]
    for generator, rows in df.groupby("generator", sort=False):
        lines += _generator_section(generator, rows)
    lines += ["## Provenance", "", "```json", json.dumps(provenance, indent=2, ensure_ascii=False, default=str),
              "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plot


def _group_titles(easy_levels) -> dict[str, str]:
    easy = sorted(easy_levels)
    hard = sorted(set(LEVELS) - set(easy))
    return {
        "easy": f"Easy (levels {', '.join(map(str, easy))})",
        "hard": f"Hard (levels {', '.join(map(str, hard))})",
        "all": "All levels",
    }


def _count_label(rows: pd.DataFrame) -> str:
    # Generators normally share the test questions; show a range if they do not.
    low, high = int(rows["num_problems"].min()), int(rows["num_problems"].max())
    return f"{low:,} problems" if low == high else f"{low:,}–{high:,} problems"


def plot_accuracy_vs_n(df: pd.DataFrame, easy_levels, path: str | os.PathLike, dataset: str = "MATH") -> None:
    """One panel per group (easy / hard / all): maj@n with a ±std band, greedy dashed."""
    fig = Figure(figsize=(13, 4.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot state, no display needed
    axes = fig.subplots(1, len(SUMMARY_GROUPS))
    generators = list(dict.fromkeys(df["generator"]))
    colors = {g: f"C{index % 10}" for index, g in enumerate(generators)}
    ns = sorted(df.loc[df["method"] == "majority", "n"].unique())
    titles = _group_titles(easy_levels)
    for ax, group in zip(axes, SUMMARY_GROUPS):
        rows = df[df["levels"] == group]
        if rows.empty:
            ax.set_axis_off()
            ax.set_title(f"{titles[group]}\nno problems")
            continue
        for generator in generators:
            _plot_generator(ax, rows[rows["generator"] == generator], generator, colors[generator])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("N (samples in the majority vote)")
        ax.set_title(f"{titles[group]}\n{_count_label(rows[rows['method'] == 'greedy'])}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Accuracy (%)")
    handles, labels = next((ax.get_legend_handles_labels() for ax in axes if ax.lines), ([], []))
    # Entries come in (maj@N, greedy) pairs; filled column by column, each column is one generator.
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(generators), 6), frameon=False)
    fig.suptitle(f"{dataset} accuracy vs. number of samples (majority voting, band = ±1 std over draws)")
    fig.savefig(path, format="png")


def _plot_generator(ax, rows: pd.DataFrame, generator: str, color: str) -> None:
    majority = rows[rows["method"] == "majority"].sort_values("n")
    greedy = rows[rows["method"] == "greedy"]
    x, y, std = majority["n"], 100 * majority["accuracy"], 100 * majority["std"]
    ax.plot(x, y, marker="o", markersize=4, color=color, label=f"{generator}: maj@N")
    # Accuracy lives in [0, 100]; a band poking past the bounds would only mislead.
    ax.fill_between(x, (y - std).clip(0, 100), (y + std).clip(0, 100), color=color, alpha=0.2, linewidth=0)
    for accuracy in greedy["accuracy"]:
        ax.axhline(100 * accuracy, color=color, linestyle="--", linewidth=1.2, label=f"{generator}: greedy")
