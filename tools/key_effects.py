"""The miniature's key effects, one row per run: the table of the README's seed-robustness section.

    python tools/key_effects.py results results-seed1 results-seed2

Reads each run's `report/metrics.csv` (SFT greedy accuracy, easy and hard, with its CI),
`report/comparisons.csv` (paired differences over test problems, with their
bootstrap CIs) and `report/evaluators.csv` (validation AUC): PRM validation AUC on hard problems,
weighted@N and best-of-N (PRM) − majority@N on hard test problems (SFT's samples), and each RL
policy − SFT on hard test problems (greedy and majority@N), in points with their 95 % CIs, under
the run's primary grader.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from easy2hard.config import GOLD_SELECTED_SUFFIX


def _difference(comparisons: pd.DataFrame, **where) -> str:
    rows = comparisons
    for key, value in where.items():
        rows = rows[rows[key] == value]
    if len(rows) != 1:
        return "n/a"
    row = rows.iloc[0]
    return _points(row.difference, row.ci_low, row.ci_high, signed=True)


def _points(value: float, low: float, high: float, signed: bool = False) -> str:
    """A fraction and its CI as points ("+1.2 [+0.0, +3.8]"): the CSVs hold fractions."""
    form = "+.1f" if signed else ".1f"
    return f"{100 * value:{form}} [{100 * low:{form}}, {100 * high:{form}}]"


def key_effects(results: Path, evaluator: str = "prm", policies=("rest_em", "dpo", "ppo")) -> dict:
    report = results / "report"
    settings = json.loads((report / "report_settings.json").read_text())
    grader, aggregation = settings["grader"], settings["evaluator_aggregation"][evaluator]
    comparisons = pd.read_csv(report / "comparisons.csv")
    comparisons = comparisons[(comparisons["grader"] == grader) & (comparisons["levels"] == "hard")]
    quality = pd.read_csv(report / "evaluators.csv")
    auc = quality[
        (quality["evaluator"] == evaluator) & (quality["aggregation"] == aggregation) & (quality["levels"] == "hard")
    ]["auc"]
    auc = auc.dropna()  # no correct (or no incorrect) hard validation sample: undefined
    metrics = pd.read_csv(report / "metrics.csv")
    greedy = metrics[(metrics["grader"] == grader) & (metrics["generator"] == "sft") & (metrics["method"] == "greedy")]
    row = {"run": str(results)}
    for levels in ("easy", "hard"):
        accuracy = greedy[greedy["levels"] == levels].drop_duplicates()
        row[f"sft greedy, {levels}"] = (
            _points(*accuracy[["accuracy", "ci_low", "ci_high"]].iloc[0]) if len(accuracy) == 1 else "n/a"
        )
    row |= {
        f"{evaluator} AUC hard (valid)": f"{auc.iloc[0]:.3f}" if len(auc) else "n/a",
        f"weighted ({evaluator}) − majority, hard": _difference(
            comparisons, comparison="evaluator_vs_majority", generator="sft", method="weighted", evaluator=evaluator
        ),
        f"best-of-N ({evaluator}) − majority, hard": _difference(
            comparisons, comparison="evaluator_vs_majority", generator="sft", method="best_of_n", evaluator=evaluator
        ),
    }
    for policy in policies:
        for method in ("greedy", "majority"):
            rows = comparisons[
                (comparisons["comparison"] == "policy_vs_sft")
                & (comparisons["method"] == method)
                & comparisons["generator"].str.startswith(policy)
                & ~comparisons["generator"].str.endswith(GOLD_SELECTED_SUFFIX)
            ]  # not easy-to-hard
            row[f"{policy} − sft ({method}), hard"] = _difference(rows)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results folders of finished runs")
    args = parser.parse_args()
    table = pd.DataFrame([key_effects(path) for path in args.results])
    print(table.to_markdown(index=False, disable_numparse=True))


if __name__ == "__main__":
    main()
