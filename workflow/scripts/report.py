"""Build the evaluation report (metrics.csv, report.md, accuracy_vs_n.png,
best_of_n_aggregations.png, report_settings.json) from evaluated test samples and evaluator scores.

Example:
    python workflow/scripts/report.py \\
        --sampled sft=results/eval/sft/test.jsonl --greedy sft=results/eval/sft/test.greedy.jsonl \\
        --scores sft:prm=results/scores/prm/sft/test.jsonl sft:orm=results/scores/orm/sft/test.jsonl \\
        --easy-levels 1 2 3 --num-draws 100 --seed 0 --aggregations min prod last mean \\
        --evaluator-aggregation prm=min orm=last oprm=min --provenance results/report/provenance.json \\
        --out-dir results/report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from easy2hard import provenance
from easy2hard.grading import GRADER_VERSION, MODES
from easy2hard.io import DataError
from easy2hard.metrics import AGGREGATIONS
from easy2hard.report import (
    OUTPUT_FILES,
    Bootstrap,
    compute_metrics,
    paired_comparisons,
    report_aggregations,
    supervision_gap,
    write_report,
)


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


def score_paths(values: list[str]) -> dict[str, dict[str, str]]:
    """Parse GEN:EVALUATOR=PATH triples into {generator: {evaluator: path}}."""
    nested: dict[str, dict[str, str]] = {}
    for key, path in generator_paths(values, "--scores").items():
        generator, sep, evaluator = key.partition(":")
        if not sep or not generator or not evaluator:
            raise SystemExit(f"--scores: expected GEN:EVALUATOR=PATH, got {key}={path!r}")
        nested.setdefault(generator, {})[evaluator] = path
    return nested


def file_record(path: str) -> dict:
    """Path and SHA-256 of an input, so every number can be traced to the exact bytes it came from."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return {"path": path, "sha256": digest.hexdigest()}


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


def sampling_backend(evaluated: str) -> dict | None:
    """Which back end sampled the solutions graded in `evaluated`: the `sampling` record of the
    samples file that the evaluation's provenance names as its input (None when not recorded)."""
    samples = ((provenance.read(evaluated) or {}).get("inputs") or {}).get("samples") or {}
    records = [(provenance.read(path) or {}).get("sampling") for path in samples]
    return records[0] if len(records) == 1 else None


def report_settings(args: argparse.Namespace, sampled, greedy, scores, aggregations) -> dict:
    """Everything the numbers depend on besides the inputs' content: report_settings.json."""
    upstream = load_provenance(args.provenance)
    return {
        "dataset": args.dataset,
        "split": "test",
        "easy_levels": args.easy_levels,
        "num_draws": args.num_draws,
        "seed": args.seed,
        "aggregations": aggregations,
        "evaluator_aggregation": args.evaluator_aggregation,
        "bootstrap": {"resamples": args.bootstrap_resamples, "confidence": args.confidence, "seed": args.seed,
                      "unit": "problems of each group, paired across methods and policies"},
        "ties": "broken by expectation (fraction of tied answers or samples that are correct)",
        "grader": args.grader,
        "graders": {"every n": args.grader, "largest N only": [m for m in MODES if m != args.grader],
                    "version": GRADER_VERSION},
        "inputs": {
            "sampled": {g: file_record(p) for g, p in sampled.items()},
            "greedy": {g: file_record(p) for g, p in greedy.items()},
            "scores": {g: {e: file_record(p) for e, p in by_e.items()} for g, by_e in scores.items()},
        },
        "sampling": {g: {"sampled": sampling_backend(path), "greedy": sampling_backend(greedy[g]) if g in greedy else None}
                     for g, path in sampled.items()},
        "provenance_file": Path(args.provenance).name if args.provenance else None,
        # The key facts of the run, copied so report.md can cite them; the rest stays in provenance.json.
        "upstream": {key: upstream.get(key) for key in ("code_version", "grader_version") if key in upstream},
    }


def _aggregation_pair(value: str) -> tuple[str, str]:
    evaluator, sep, how = value.partition("=")
    if not sep or how not in AGGREGATIONS:
        raise argparse.ArgumentTypeError(f"expected EVALUATOR=one of {','.join(AGGREGATIONS)}, got {value!r}")
    return evaluator, how


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sampled", nargs="+", required=True, metavar="GEN=PATH",
                        help="evaluated test samples of each generator (JSONL)")
    parser.add_argument("--greedy", nargs="+", required=True, metavar="GEN=PATH",
                        help="evaluated greedy test solutions of each generator (JSONL)")
    parser.add_argument("--scores", nargs="*", default=[], metavar="GEN:EVALUATOR=PATH",
                        help="evaluator scores of each generator's test samples (JSONL)")
    parser.add_argument("--easy-levels", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--num-draws", type=int, default=100, help="random subsets per n < N")
    parser.add_argument("--seed", type=int, default=0, help="sample subsets and bootstrap resamples")
    parser.add_argument("--bootstrap-resamples", type=int, required=True,
                        help="resampled problem sets for the CIs and paired differences (report.bootstrap.resamples)")
    parser.add_argument("--confidence", type=float, required=True, help="CI level (report.bootstrap.confidence)")
    parser.add_argument("--baseline", default="sft", help="the policy the others are compared with")
    parser.add_argument("--aggregations", nargs="+", choices=AGGREGATIONS, default=list(AGGREGATIONS),
                        help="step aggregations written to metrics.csv")
    parser.add_argument("--evaluator-aggregation", nargs="+", type=_aggregation_pair, required=True,
                        metavar="EVALUATOR=AGGREGATION",
                        help="each evaluator's step aggregation in the tables and plot (evaluators.aggregation; an "
                             "evaluator `<kind>_full` uses its kind's)")
    parser.add_argument("--dataset", default="MATH", help="dataset name for titles")
    parser.add_argument("--grader", choices=MODES, default="lenient",
                        help="grading.mode: the grader of the evaluation files' own verdicts (the others are "
                             "read from their `verdicts` and reported at the largest N)")
    parser.add_argument("--provenance", help="the run's provenance.json (cited in report.md)")
    parser.add_argument("--out-dir", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sampled = generator_paths(args.sampled, "--sampled")
    greedy = generator_paths(args.greedy, "--greedy")
    scores = score_paths(args.scores)
    args.evaluator_aggregation = dict(args.evaluator_aggregation)
    aggregations = report_aggregations(args.aggregations, args.evaluator_aggregation)
    try:
        settings = report_settings(args, sampled, greedy, scores, aggregations)
        bootstrap = Bootstrap(args.bootstrap_resamples, args.seed, args.confidence)
        per_problem = {}
        df = compute_metrics(sampled, greedy, args.easy_levels, args.num_draws, args.seed, scores, aggregations,
                             args.grader, [m for m in MODES if m != args.grader], bootstrap, per_problem)
        comparisons = paired_comparisons(per_problem, bootstrap, args.evaluator_aggregation, args.baseline)
        gap = supervision_gap(per_problem, bootstrap, args.evaluator_aggregation, args.baseline)
        write_report(df, args.out_dir, settings, comparisons, gap)
    except ValueError as error:  # DataError included: bad inputs get one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(OUTPUT_FILES)} to {args.out_dir} ({len(df)} metric rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
