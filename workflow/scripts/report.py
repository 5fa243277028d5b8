"""Build the evaluation report (metrics.csv, report.md, accuracy_vs_n.png) from evaluated samples.

Example:
    python workflow/scripts/report.py \\
        --sampled sft=results/eval/sft/test.jsonl --greedy sft=results/eval/sft/test.greedy.jsonl \\
        --easy-levels 1 2 3 --num-draws 100 --seed 0 --out-dir results/report
"""

from __future__ import annotations

import argparse
import json
import sys

from easy2hard.io import DataError
from easy2hard.report import compute_metrics, write_report


def generator_paths(values: list[str], option: str) -> dict[str, str]:
    """Parse GEN=PATH pairs into an ordered {generator: path} dict."""
    pairs = {}
    for value in values:
        generator, sep, path = value.partition("=")
        if not sep or not generator or not path:
            raise SystemExit(f"{option}: expected GEN=PATH, got {value!r}")
        if generator in pairs:
            raise SystemExit(f"{option}: generator {generator!r} given twice")
        pairs[generator] = path
    return pairs


def load_provenance(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON ({error.msg})") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sampled", nargs="+", required=True, metavar="GEN=PATH",
                        help="evaluated samples of each generator (JSONL)")
    parser.add_argument("--greedy", nargs="+", required=True, metavar="GEN=PATH",
                        help="evaluated greedy solutions of each generator (JSONL)")
    parser.add_argument("--easy-levels", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--num-draws", type=int, default=100, help="random subsets per maj@n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="MATH", help="dataset name for titles")
    parser.add_argument("--provenance", help="optional JSON file embedded in report.md")
    parser.add_argument("--out-dir", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sampled = generator_paths(args.sampled, "--sampled")
    greedy = generator_paths(args.greedy, "--greedy")
    provenance = {
        "easy_levels": args.easy_levels,
        "num_draws": args.num_draws,
        "seed": args.seed,
        "dataset": args.dataset,
        "sampled": sampled,
        "greedy": greedy,
    }
    try:
        upstream = load_provenance(args.provenance)
        if upstream:
            provenance["upstream"] = upstream
        df = compute_metrics(sampled, greedy, args.easy_levels, args.num_draws, args.seed)
        write_report(df, args.out_dir, provenance)
    except ValueError as error:  # DataError included: bad inputs get one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out_dir}/metrics.csv, report.md, accuracy_vs_n.png ({len(df)} metric rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
