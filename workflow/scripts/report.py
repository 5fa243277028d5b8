"""Build the evaluation report (metrics, comparisons and gap CSVs, the markdown report, two plots
and the settings record) from evaluated test samples and evaluator scores.

--params (the report rule's config slice, every key required): easy_levels, num_draws, seed,
bootstrap {resamples, confidence}, aggregations, evaluator_aggregation {evaluator: aggregation},
grader (grading.mode), data_source and huggingface_test_name (data.source and
data.huggingface.test_name: the dataset's name in titles, report.dataset_title).

Example:
    python workflow/scripts/report.py \\
        --params '{"aggregations": ["min", "prod", "last", "mean"],
                   "bootstrap": {"confidence": 0.95, "resamples": 1000}, "data_source": "math_jsonl",
                   "huggingface_test_name": "HuggingFaceH4/MATH-500", "easy_levels": [1, 2, 3],
                   "evaluator_aggregation": {"orm": "last", "prm": "min"}, "grader": "lenient", "num_draws": 100,
                   "seed": 0}' \\
        --sampled sft=results/eval/sft/test.jsonl --greedy sft=results/eval/sft/test.greedy.jsonl \\
        --scores sft:prm=results/scores/prm/sft/test.jsonl sft:orm=results/scores/orm/sft/test.jsonl \\
        --provenance results/report/provenance.json \\
        --out metrics=results/report/metrics.csv comparisons=results/report/comparisons.csv \\
              gap=results/report/gap_recovered.csv markdown=results/report/report.md \\
              plot=results/report/accuracy_vs_n.png aggregations=results/report/best_of_n_aggregations.png \\
              settings=results/report/report_settings.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from easy2hard import cli, provenance
from easy2hard.grading import GRADER_VERSION, MODES
from easy2hard.io import DataError
from easy2hard.report import (
    BASELINE,
    OUTPUT_KEYS,
    Bootstrap,
    compute_metrics,
    dataset_title,
    paired_comparisons,
    report_aggregations,
    supervision_gap,
    write_report,
)

PARAM_KEYS = (
    "easy_levels",
    "num_draws",
    "seed",
    "bootstrap",
    "aggregations",
    "evaluator_aggregation",
    "grader",
    "data_source",
    "huggingface_test_name",
)
BOOTSTRAP_KEYS = ("resamples", "confidence")


def score_paths(values: list[str]) -> dict[str, dict[str, str]]:
    """Parse GEN:EVALUATOR=PATH triples into {generator: {evaluator: path}}."""
    nested: dict[str, dict[str, str]] = {}
    for key, path in cli.key_paths(values, "--scores", "GEN:EVALUATOR=PATH").items():
        generator, sep, evaluator = key.partition(":")
        if not sep or not generator or not evaluator:
            raise SystemExit(f"--scores: expected GEN:EVALUATOR=PATH, got {key + '=' + path!r}")
        nested.setdefault(generator, {})[evaluator] = path
    return nested


def file_record(path: str) -> dict:
    """Path and SHA-256 of an input, so every number can be traced to the exact bytes it came from."""
    try:
        return {"path": path, "sha256": provenance.sha256_file(path)}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None


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


def report_settings(params: dict, provenance_path: str | None, sampled, greedy, scores, aggregations) -> dict:
    """Everything the numbers depend on besides the inputs' content: the settings file."""
    upstream = load_provenance(provenance_path)
    bootstrap = params["bootstrap"]
    return {
        "dataset": dataset_title(params["data_source"], params["huggingface_test_name"]),
        "split": "test",
        "easy_levels": params["easy_levels"],
        "num_draws": params["num_draws"],
        "seed": params["seed"],
        "aggregations": aggregations,
        "evaluator_aggregation": params["evaluator_aggregation"],
        "bootstrap": {
            "resamples": bootstrap["resamples"],
            "confidence": bootstrap["confidence"],
            "seed": params["seed"],
            "unit": "problems of each group, paired across methods and policies",
        },
        "ties": "broken by expectation (fraction of tied answers or samples that are correct)",
        "grader": params["grader"],
        "graders": {
            "every n": params["grader"],
            "largest N only": [m for m in MODES if m != params["grader"]],
            "version": GRADER_VERSION,
        },
        "inputs": {
            "sampled": {g: file_record(p) for g, p in sampled.items()},
            "greedy": {g: file_record(p) for g, p in greedy.items()},
            "scores": {g: {e: file_record(p) for e, p in by_e.items()} for g, by_e in scores.items()},
        },
        "sampling": {
            g: {"sampled": sampling_backend(path), "greedy": sampling_backend(greedy[g]) if g in greedy else None}
            for g, path in sampled.items()
        },
        "provenance_file": Path(provenance_path).name if provenance_path else None,
        # The key facts of the run, copied so report.md can cite them; the rest stays in provenance.json.
        "upstream": {key: upstream.get(key) for key in ("code_version", "grader_version") if key in upstream},
    }


def check_params(parser: argparse.ArgumentParser, params: dict) -> None:
    """Every key of PARAM_KEYS (and of bootstrap) present, no other; a known grader."""
    for keys, where, field in ((PARAM_KEYS, "--params", None), (BOOTSTRAP_KEYS, "--params bootstrap", "bootstrap")):
        given = params if field is None else params[field]
        if not isinstance(given, dict):
            parser.error(f"{where}: expected a JSON object, got {given!r}")
        missing, unknown = [k for k in keys if k not in given], [k for k in given if k not in keys]
        if missing or unknown:
            parser.error(
                f"{where}: "
                + "; ".join([*(f"missing key {k!r}" for k in missing), *(f"unknown key {k!r}" for k in unknown)])
                + f" (keys: {', '.join(keys)})"
            )
    if params["grader"] not in MODES:
        parser.error(f"--params: grader must be one of {', '.join(MODES)}, got {params['grader']!r}")
    if not isinstance(params["evaluator_aggregation"], dict):
        parser.error(
            "--params: evaluator_aggregation must map evaluators to aggregations, "
            f"got {params['evaluator_aggregation']!r}"
        )


def in_report_order(evaluator_aggregation: dict[str, str], scores: dict[str, dict[str, str]]) -> dict[str, str]:
    """The evaluators' aggregations in the order the report shows the evaluators (that of --scores),
    then the others: the text and the settings file do not depend on how --params ordered its keys."""
    order = list(dict.fromkeys(e for by_e in scores.values() for e in by_e))
    position = {e: i for i, e in enumerate(order)}
    return dict(sorted(evaluator_aggregation.items(), key=lambda item: position.get(item[0], len(order))))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser(__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--sampled",
        nargs="+",
        required=True,
        metavar="GEN=PATH",
        help="evaluated test samples of each generator (JSONL)",
    )
    parser.add_argument(
        "--greedy",
        nargs="+",
        required=True,
        metavar="GEN=PATH",
        help="evaluated greedy test solutions of each generator (JSONL)",
    )
    parser.add_argument(
        "--scores",
        nargs="*",
        default=[],
        metavar="GEN:EVALUATOR=PATH",
        help="evaluator scores of each generator's test samples (JSONL)",
    )
    parser.add_argument("--provenance", help="the run's provenance.json (cited in report.md)")
    parser.add_argument(
        "--out",
        nargs="+",
        required=True,
        metavar="KEY=PATH",
        help=f"where each output goes; keys: {', '.join(OUTPUT_KEYS)} (the report rule's output names)",
    )
    args = parser.parse_args(argv)
    args.sampled = cli.key_paths(args.sampled, "--sampled", "GEN=PATH")
    args.greedy = cli.key_paths(args.greedy, "--greedy", "GEN=PATH")
    args.scores = score_paths(args.scores)
    args.out = cli.key_paths(args.out, "--out", keys=OUTPUT_KEYS)
    check_params(parser, args.params)
    args.params["evaluator_aggregation"] = in_report_order(args.params["evaluator_aggregation"], args.scores)
    try:  # aggregation names: the configured ones and each evaluator's own
        args.aggregations = report_aggregations(args.params["aggregations"], args.params["evaluator_aggregation"])
    except ValueError as error:
        parser.error(f"--params: {error}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.setup(args)
    params, sampled, greedy, scores = args.params, args.sampled, args.greedy, args.scores
    try:
        settings = report_settings(params, args.provenance, sampled, greedy, scores, args.aggregations)
        bootstrap = Bootstrap(params["bootstrap"]["resamples"], params["seed"], params["bootstrap"]["confidence"])
        per_problem = {}
        df = compute_metrics(
            sampled,
            greedy,
            params["easy_levels"],
            params["num_draws"],
            params["seed"],
            scores,
            args.aggregations,
            params["grader"],
            [m for m in MODES if m != params["grader"]],
            bootstrap,
            per_problem,
        )
        comparisons = paired_comparisons(per_problem, bootstrap, params["evaluator_aggregation"], BASELINE)
        gap = supervision_gap(per_problem, bootstrap, params["evaluator_aggregation"], BASELINE)
        write_report(df, args.out, settings, comparisons, gap)
    except ValueError as error:  # DataError included: bad inputs get one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(map(str, args.out.values()))} ({len(df)} metric rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
