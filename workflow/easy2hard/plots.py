"""The report's plots (matplotlib, Agg canvas, no pyplot state): accuracy vs N and best-of-N by
step aggregation, drawn from the metrics table of `easy2hard.report`."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from easy2hard.metrics import AGGREGATIONS, LEVELS, aggregation_for
from easy2hard.report import SUMMARY_GROUPS, aggregations_text, evaluators_in, largest_n, method_label, select

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
    return {e: EVALUATOR_COLORS[i % len(EVALUATOR_COLORS)] for i, e in enumerate(evaluators_in(df))}


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
                _curve(
                    ax,
                    select(part, method, evaluator, how),
                    method_label(method, evaluator, aggregation=how),
                    dict(style, color=color),
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("N (samples per problem)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for row_axes in axes:
        row_axes[0].set_ylabel("Accuracy (%)")
    _legend_below(fig, axes)
    fig.suptitle(
        f"{settings.get('dataset', 'MATH')} {settings.get('split', 'test')} accuracy vs. N "
        f"(step aggregation: {aggregations_text(settings).replace('`', '')}; band = ±1 std over "
        f"{settings['num_draws']} draws)"
    )
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
        fig.legend(
            entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 4), frameon=False
        )


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
        max_n = largest_n(rows)
        _aggregation_bars(ax, part[(part["method"] == "best_of_n") & (part["n"] == max_n)], evaluators_in(rows))
        for majority in select(part, "majority", n=max_n).itertuples():
            ax.axhline(100 * majority.accuracy, color="black", linewidth=1.3, label=method_label("majority", n=max_n))
        ax.set_title(title)
        ax.set_ylabel(f"Best-of-{max_n} accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(
        f"{settings.get('dataset', 'MATH')} {settings.get('split', 'test')}: best-of-N by step aggregation (largest N)"
    )
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
