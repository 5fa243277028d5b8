"""The Snakemake DAG: hard-level gold answers reach no training/selection stage, and the whole
default DAG runs end to end (tiny config) with a report that agrees with the graded samples."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import MATH_DIR, PRM800K_EXAMPLES_DIR, REPO_ROOT
from easy2hard.config import GOLD_SELECTED_SUFFIX

GOLD_DIR = "results/gold/"
# The hard train solutions: read by the oracle rules only (the "Full" upper bounds).
ORACLE_DIR = "results/oracle/"
ORACLE_RULES = {"sft_full", "grade_train_full", "orm_data_full", "prm_data_full", "oprm_data_full"}
ORACLE_OUTPUT = re.compile(r"^results/(oracle|graded_full)/|(^|/)(sft|prm|orm|oprm)_full(/|\.|$)")
# The PPO checkpoint chosen with hard validation gold (rl.ppo.checkpoint_selection: hard_valid_gold) and
# everything made from it: a labelled reference point that may depend on results/gold/, like evaluation.
GOLD_SELECTED_OUTPUT = re.compile(rf"{GOLD_SELECTED_SUFFIX}(/|\.|$)|/gold_selection\.csv$")
# Rules allowed to read gold answers of valid/test (every level), and what may consume their output.
EVALUATION_RULES = {"evaluate", "evaluate_greedy", "evaluator_report"}
REPORTING_RULES = EVALUATION_RULES | {"report", "rl_report", "all"}
TRAINING_AND_SELECTION_RULES = {
    "base_model",
    "sft",
    "sample",
    "sample_greedy",
    "grade_train",
    "orm_data",
    "prm_data",
    "oprm_data",
    "train_evaluator",
    "score",
    "rest_em_data",
    "rest_em",
    "dpo_pairs",
    "dpo",
    "ppo",
}
PRESETS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def snakemake(*args: str, cwd: Path = REPO_ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def planned_jobs(*config_args: str, force: bool = True, cwd: Path = REPO_ROOT) -> dict[str, tuple[str, list[str]]]:
    """output file -> (rule, input files) for every job of the planned DAG (a dry run, forced
    unless `force` is False)."""
    result = snakemake("-n", *(["--forceall"] if force else []), "--cores", "1", *config_args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if not header:
            continue
        fields = dict(re.findall(r"^\s+(input|output): (.*)$", block, flags=re.M))
        for output in fields.get("output", "").split(", "):
            if output:
                jobs[output] = (header.group(1), [p for p in fields.get("input", "").split(", ") if p])
    assert jobs, result.stdout[-2000:]
    return jobs


def downstream_of(jobs: dict[str, tuple[str, list[str]]], prefix: str = GOLD_DIR) -> dict[str, str]:
    """Every output that depends, directly or transitively, on a file under `prefix`: output -> rule."""
    tainted: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for output, (rule, inputs) in jobs.items():
            if output in tainted:
                continue
            if any(path.startswith(prefix) or path in tainted for path in inputs):
                tainted[output] = rule
                changed = True
    return tainted


downstream_of_gold = downstream_of


def hard_answer_leaks(jobs: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Outputs of training or selection that depend on a hard gold answer they may not see: any
    dependence on results/gold/ (valid/test answers of every level), and a dependence on the hard
    train solutions (results/oracle/) anywhere but in an oracle's own outputs."""
    gold, oracle = downstream_of(jobs, GOLD_DIR), downstream_of(jobs, ORACLE_DIR)
    leaks = []
    for output, (rule, _) in jobs.items():
        if rule in REPORTING_RULES:
            continue
        if output in gold and not GOLD_SELECTED_OUTPUT.search(output):
            leaks.append(f"{output} ({rule}) depends on {GOLD_DIR}")
        if output in oracle and not ORACLE_OUTPUT.search(output):
            leaks.append(f"{output} ({rule}) is an easy-to-hard output that depends on {ORACLE_DIR}")
    return leaks


ALL_ORACLES = ("--configfile", str(REPO_ROOT / "tests" / "configs" / "all_oracles.yaml"))


# The paper presets read PRM800K: planned with the sample records in its place.
PRM800K_SAMPLES = REPO_ROOT / "tests" / "configs" / "prm800k_samples.yaml"


def config_cases():
    cases = [pytest.param((), id="default"), pytest.param(ALL_ORACLES, id="oracles-and-icl")]
    for preset in PRESETS:
        marks, files = [], [str(preset)]
        if "math" in preset.read_text() and not (MATH_DIR / "train.jsonl").exists():
            marks.append(pytest.mark.skip(reason="real MATH files absent"))
        if "source: prm800k" in preset.read_text():
            files.append(str(PRM800K_SAMPLES))
            if not PRM800K_EXAMPLES_DIR.exists():
                marks.append(pytest.mark.skip(reason="PRM800K sample records absent"))
        cases.append(pytest.param(("--configfile", *files), id=preset.stem, marks=marks))
    return cases


@pytest.mark.parametrize("config_args", config_cases())
def test_hard_answers_reach_only_evaluation_and_the_oracles(config_args):
    """No easy-to-hard stage (SFT, evaluators, RL, their data and samples) depends on a hard gold
    answer: results/gold/ feeds evaluation only, results/oracle/ (hard train solutions) the oracle
    rules only, and no oracle output feeds an easy-to-hard stage."""
    jobs = planned_jobs(*config_args)
    assert hard_answer_leaks(jobs) == []
    oracle_readers = {rule for rule, inputs in jobs.values() if any(p.startswith(ORACLE_DIR) for p in inputs)}
    assert oracle_readers <= ORACLE_RULES
    if config_args == ALL_ORACLES:
        assert oracle_readers == {"sft_full", "grade_train_full", "orm_data_full", "prm_data_full"}
        assert {
            "results/models/sft_full",
            "results/evaluators/oprm_full/model",
            "results/scores/prm_full/sft/test.jsonl",
            "results/eval/sft_full/test.jsonl",
            "results/eval/icl/test.jsonl",
        } <= set(jobs)
        # The in-context baseline samples the base model with easy exemplars only.
        rule, inputs = jobs["results/samples/icl/test.jsonl"]
        assert rule == "sample_icl" and set(inputs) == {
            "results/models/base",
            "results/data/test.jsonl",
            "results/data/train_easy.jsonl",
        }
        # The step labeller (the offline human labels) reads SFT's samples and the easy questions.
        rule, inputs = jobs["results/evaluators/prm/train.jsonl"]
        assert rule == "prm_data" and set(inputs) == {"results/graded/sft/train.jsonl", "results/data/train_easy.jsonl"}


def test_the_leak_check_catches_an_oracle_output_feeding_an_easy_to_hard_stage():
    """The check above fails where it must: an oracle evaluator scoring data for RL, or SFT
    trained from an oracle file, is a leak; an oracle chain on its own is not."""
    jobs = {
        "results/oracle/train_hard.jsonl": ("prepare_data", []),
        "results/graded_full/sft/train.jsonl": ("grade_train_full", ["results/oracle/train_hard.jsonl"]),
        "results/evaluators/orm_full/train.jsonl": ("orm_data_full", ["results/graded_full/sft/train.jsonl"]),
        "results/evaluators/orm_full/model": ("train_evaluator", ["results/evaluators/orm_full/train.jsonl"]),
        "results/scores/orm_full/sft/test.jsonl": ("score", ["results/evaluators/orm_full/model"]),
        "results/report/report.md": ("report", ["results/scores/orm_full/sft/test.jsonl"]),
    }
    assert hard_answer_leaks(jobs) == []
    leaky = {**jobs, "results/rl/dpo_r1/pairs.jsonl": ("dpo_pairs", ["results/scores/orm_full/sft/test.jsonl"])}
    assert hard_answer_leaks(leaky) == [
        "results/rl/dpo_r1/pairs.jsonl (dpo_pairs) is an easy-to-hard output that depends on results/oracle/"
    ]
    direct = {**jobs, "results/models/sft": ("sft", ["results/oracle/train_hard.jsonl"])}
    assert hard_answer_leaks(direct) == [
        "results/models/sft (sft) is an easy-to-hard output that depends on results/oracle/"
    ]


def test_the_leak_check_catches_a_gold_selected_policy_feeding_an_easy_to_hard_stage():
    """The PPO checkpoint chosen with hard validation gold may be sampled and scored for the report;
    anything easy-to-hard built from it is a leak."""
    jobs = {
        "results/gold/valid.jsonl": ("prepare_data", []),
        "results/models/ppo_r1": ("ppo", []),
        "results/models/ppo_r1_gold_selected": (
            "ppo_gold_selected",
            ["results/models/ppo_r1", "results/gold/valid.jsonl"],
        ),
        "results/rl/ppo_r1/gold_selection.csv": ("ppo_gold_selected", ["results/gold/valid.jsonl"]),
        "results/samples/ppo_r1_gold_selected/test.jsonl": ("sample", ["results/models/ppo_r1_gold_selected"]),
        "results/scores/prm/ppo_r1_gold_selected/test.jsonl": (
            "score",
            ["results/samples/ppo_r1_gold_selected/test.jsonl"],
        ),
    }
    assert hard_answer_leaks(jobs) == []
    leaky = {**jobs, "results/models/ppo_r2": ("ppo", ["results/models/ppo_r1_gold_selected"])}
    assert hard_answer_leaks(leaky) == ["results/models/ppo_r2 (ppo) depends on results/gold/"]


@pytest.mark.parametrize("config_args", config_cases())
def test_gold_answers_reach_only_evaluation(config_args):
    jobs = planned_jobs(*config_args)
    rules = {rule for rule, _ in jobs.values()}
    assert TRAINING_AND_SELECTION_RULES | {"evaluate", "report"} <= rules  # the DAG is really there
    readers = {rule for rule, inputs in jobs.values() if any(p.startswith(GOLD_DIR) for p in inputs)}
    assert readers and readers <= EVALUATION_RULES - {"evaluator_report"} | {"ppo_gold_selected"}
    # The policy chosen with hard validation gold, and what is made of it, is labelled as such.
    tainted = {
        output: rule for output, rule in downstream_of_gold(jobs).items() if not GOLD_SELECTED_OUTPUT.search(output)
    }
    assert set(tainted.values()) <= REPORTING_RULES, tainted
    # Training and sampling of every easy-to-hard policy depend on no gold file at all.
    for output, (rule, _) in jobs.items():
        if rule in TRAINING_AND_SELECTION_RULES:
            assert output not in tainted


def test_gold_files_are_written_only_by_the_data_stage():
    jobs = planned_jobs()
    writers = {rule for output, (rule, _) in jobs.items() if output.startswith(GOLD_DIR)}
    assert writers == {"prepare_data"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    result = snakemake(
        "--directory", str(workdir), "--configfile", str(REPO_ROOT / "tests" / "configs" / "tiny.yaml"), "--cores", "2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_stage_wrote_its_output(tiny_run):
    results = tiny_run / "results"
    for path in [
        "data/train_easy.jsonl",
        "models/base/config.json",
        "models/sft/model.safetensors",
        "models/sft/train_log.jsonl",
        "samples/sft/train.jsonl",
        "samples/sft/test.greedy.jsonl",
        "graded/sft/train.jsonl",
        "eval/sft/valid.jsonl",
        "report/metrics.csv",
        "report/comparisons.csv",
        "report/report.md",
        "report/accuracy_vs_n.png",
        "report/provenance.json",
        "evaluators/prm/train.jsonl",
        "evaluators/orm/stats.json",
        "evaluators/oprm/model/model.safetensors",
        "scores/prm/sft/test.jsonl",
        "report/evaluators.md",
        "rl/rest_em_r1/stats.json",
        "models/rest_em_r1/model.safetensors",
        "rl/dpo_r1/pairs.jsonl",
        "models/dpo_r1/train_log.jsonl",
        "models/ppo_r1/model.safetensors",
        "rl/ppo_r1/value/model.safetensors",
        "eval/ppo_r1/test.greedy.jsonl",
        "scores/oprm/dpo_r1/test.jsonl",
        "report/rl_rounds.csv",
        "report/rl_training.png",
        "oracle/train_hard.jsonl",
        "graded_full/sft/train.jsonl",
        "evaluators/orm_full/model/model.safetensors",
        "scores/orm_full/sft/test.jsonl",
        "models/sft_full/model.safetensors",
        "eval/sft_full/test.jsonl",
        "report/gap_recovered.csv",
    ]:
        assert (results / path).exists(), path
    assert not list(results.rglob(".*.*")), "temporary files left behind"


def test_every_sampling_job_used_the_engine_and_says_so(tiny_run):
    """The tiny run's model is a plain Llama: samples, greedy decodes, PRM rollouts and PPO rollouts
    are all drawn by the engine, each output's provenance says so, and so does the report."""
    results = tiny_run / "results"
    outputs = [*results.glob("samples/*/*.jsonl"), results / "evaluators/prm/train.jsonl", results / "models/ppo_r1"]
    assert len(outputs) > 10
    for output in outputs:
        record = json.loads(
            (output / "provenance.json" if output.is_dir() else Path(f"{output}.provenance.json")).read_text()
        )
        sampling = record["sampling"]
        assert sampling["backend"] == "engine" and not sampling["fallbacks"], (output, sampling)
        assert sampling["prompts"]["engine"] > 0
    settings = json.loads((results / "report/report_settings.json").read_text())
    assert {kind: record["backend"] for kind, record in settings["sampling"]["sft"].items()} == {
        "sampled": "engine",
        "greedy": "engine",
    }
    assert "sft sampled: engine; sft greedy: engine" in (results / "report/report.md").read_text()


def test_a_fallback_the_engine_should_not_need_is_printed_at_the_end_of_a_run(tiny_run):
    """The job logs go unread: Snakemake's onsuccess hook repeats such fallbacks on the console."""
    fake = tiny_run / "results" / "samples" / "elsewhere" / "test.jsonl.provenance.json"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        json.dumps(
            {
                "sampling": {
                    "mode": "auto",
                    "backend": "hf",
                    "prompts": {"hf": 3},
                    "fallbacks": [
                        {
                            "reason": "its forward takes no position_ids / attention_mask / cache or past_key_values",
                            "expected": False,
                        }
                    ],
                }
            }
        )
    )
    try:
        result = snakemake(
            "--directory",
            str(tiny_run),
            "--configfile",
            str(REPO_ROOT / "tests" / "configs" / "tiny.yaml"),
            "--cores",
            "1",
            "--forcerun",
            "provenance",
            "results/report/provenance.json",
        )
    finally:
        fake.unlink()
        fake.parent.rmdir()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: the sampling engine fell back to transformers' generate" in result.stderr
    assert f"{Path('results') / fake.relative_to(tiny_run / 'results')}: its forward takes no" in result.stderr


def test_oracles_are_graded_on_every_level_and_reported(tiny_run):
    """The oracle evaluator's labels come from easy AND hard train samples (the easy-to-hard ones from
    easy only); the report has the Full SFT as a policy, the oracle evaluator on SFT's samples, the
    easy-vs-oracle differences and the supervision gap."""
    results = tiny_run / "results"
    hard_ids = {row["unique_id"] for row in read_jsonl(results / "data/train_hard.jsonl")}
    full = read_jsonl(results / "graded_full/sft/train.jsonl")
    assert all(row["correct"] is not None for row in full)  # hard samples graded too
    easy_only = read_jsonl(results / "graded/sft/train.jsonl")
    assert all((row["correct"] is None) == (row["unique_id"] in hard_ids) for row in easy_only)
    with open(results / "report/metrics.csv", newline="") as handle:
        metrics = list(csv.DictReader(handle))
    assert any(r["generator"] == "sft_full" for r in metrics)
    assert {r["evaluator"] for r in metrics if r["generator"] == "sft"} >= {"orm", "orm_full"}
    with open(results / "report/comparisons.csv", newline="") as handle:
        kinds = {r["comparison"] for r in csv.DictReader(handle)}
    assert {"easy_vs_oracle", "evaluator_vs_majority", "policy_vs_sft"} <= kinds
    with open(results / "report/gap_recovered.csv", newline="") as handle:
        gap = list(csv.DictReader(handle))
    assert {(r["evaluator"], r["oracle"], r["aggregation"]) for r in gap} == {("orm", "orm_full", "last")}
    text = (results / "report/report.md").read_text()
    assert "### Supervision gap recovered (sft's samples)" in text and "Weighted@4 (orm_full, last)" in text


def test_the_in_context_baseline_samples_the_base_model_with_easy_exemplars(tiny_run):
    results = tiny_run / "results"
    easy_ids = {row["unique_id"] for row in read_jsonl(results / "data/train_easy.jsonl")}
    provenance = json.loads((results / "samples/icl/test.jsonl.provenance.json").read_text())
    assert provenance["icl"]["k"] == 1 and set(provenance["icl"]["exemplars"]) <= easy_ids
    assert len(read_jsonl(results / "samples/icl/test.jsonl")) == 4 * len(read_jsonl(results / "data/test.jsonl"))
    with open(results / "report/metrics.csv", newline="") as handle:
        assert any(r["generator"] == "icl" for r in csv.DictReader(handle))


def test_samples_and_grading_follow_the_split(tiny_run):
    results = tiny_run / "results"
    easy_ids = {row["unique_id"] for row in read_jsonl(results / "data/train_easy.jsonl")}
    hard_ids = {row["unique_id"] for row in read_jsonl(results / "data/train_hard.jsonl")}
    graded = read_jsonl(results / "graded/sft/train.jsonl")
    per_question = Counter(row["unique_id"] for row in graded)
    assert set(per_question) == easy_ids | hard_ids and set(per_question.values()) == {2}
    for row in graded:
        assert (row["correct"] is None) == (row["unique_id"] in hard_ids)
    for name in ("train_hard", "valid", "test"):
        for row in read_jsonl(results / f"data/{name}.jsonl"):
            assert set(row) == {"unique_id", "problem", "level", "subject"}


def test_report_agrees_with_graded_samples(tiny_run, tmp_path):
    """greedy, maj@N, weighted@N and best-of-N@N (prm, min) recomputed here, independently of
    easy2hard.metrics, from the graded test samples and the PRM scores of the tiny run; then again
    on a relabelled copy (the tiny policy is rarely right, so all-zero accuracies would agree trivially)."""
    import hashlib
    import math
    import os

    results = tiny_run / "results"
    columns = [
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
    groups = {"easy": {1, 2, 3}, "hard": {4, 5}, "all": {1, 2, 3, 4, 5}}
    prm_path = results / "scores/prm/sft/test.jsonl"
    prm = {(r["unique_id"], r["sample_index"]): min(r["step_scores"], default=0.0) for r in read_jsonl(prm_path)}

    def vote(samples, weight):
        """Score of the answer cluster with the largest total weight (ties: fraction correct)."""
        totals = defaultdict(float)
        for s in samples:
            if s["answer_cluster"] >= 0:
                totals[s["answer_cluster"]] += weight(s)
        if not totals:
            return 0.0
        top = max(totals.values())
        winners = [c for c, total in totals.items() if math.isclose(total, top, rel_tol=1e-9)]
        right = {s["answer_cluster"] for s in samples if s["correct"]}
        return sum(c in right for c in winners) / len(winners)

    def valid(s):
        """A truncated solution or one without an answer ranks last in best-of-N and weighs nothing."""
        return s.get("finished", True) is not False and s["answer"] is not None

    def prm_score(s):
        return prm[(s["unique_id"], s["sample_index"])] if valid(s) else -1.0

    def best(samples):
        scores = [prm_score(s) for s in samples]
        tied = [s for s, score in zip(samples, scores) if score == max(scores)]
        return sum(s["correct"] for s in tied) / len(tied)

    methods = {
        ("-", "majority", "-"): lambda samples: vote(samples, lambda s: 1.0),
        ("prm", "weighted", "min"): lambda samples: vote(samples, lambda s: max(prm_score(s), 0.0)),
        ("prm", "best_of_n", "min"): best,
    }

    def check(metrics_csv, sampled, greedy, grader="lenient", ns=(1, 2, 4)):
        with open(metrics_csv, newline="") as handle:
            metrics = [r for r in csv.DictReader(handle) if r["grader"] == grader]
        assert metrics and list(metrics[0]) == columns
        lookup = {tuple(r[c] for c in columns[:4]) + (int(r["n"]), r["levels"]): r for r in metrics}
        assert len(lookup) == len(metrics)  # one row per key
        assert {int(r["n"]) for r in metrics if r["method"] == "majority"} == set(ns)
        by_question = defaultdict(list)
        for row in sampled:
            by_question[row["unique_id"]].append(row)
        assert {len(samples) for samples in by_question.values()} == {4}
        for name, levels in groups.items():
            rows = [r for r in greedy if r["level"] in levels]
            row = lookup[("sft", "-", "greedy", "-", 1, name)]
            assert int(row["num_problems"]) == len(rows)
            assert float(row["accuracy"]) == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
            questions = [samples for samples in by_question.values() if samples[0]["level"] in levels]
            for (evaluator, method, aggregation), score in methods.items():
                row = lookup[("sft", evaluator, method, aggregation, 4, name)]
                expected = sum(score(samples) for samples in questions) / len(questions)
                assert float(row["accuracy"]) == pytest.approx(expected), (method, name)
                assert (int(row["num_problems"]), float(row["std"])) == (len(questions), 0.0)
            # One sample: every method scores it, on the same random subsets.
            if 1 in ns:
                assert len({lookup[("sft", e, m, a, 1, name)]["accuracy"] for e, m, a in methods}) == 1
        return metrics

    sampled = read_jsonl(results / "eval/sft/test.jsonl")
    greedy = read_jsonl(results / "eval/sft/test.greedy.jsonl")
    metrics = check(results / "report/metrics.csv", sampled, greedy)

    # The authors' grader, from the evaluation's `verdicts`, at N = 4 only.
    def graded_by(rows, grader):
        return [dict(r, **r["verdicts"][grader]) for r in rows]

    check(results / "report/metrics.csv", graded_by(sampled, "prm800k"), graded_by(greedy, "prm800k"), "prm800k", (4,))
    # Every evaluator and aggregation has its rows, and the settings name the exact inputs.
    assert {(r["evaluator"], r["aggregation"]) for r in metrics if r["method"] == "best_of_n"} == {
        (e, a) for e in ("prm", "orm", "oprm", "orm_full") for a in ("min", "prod", "last", "mean")
    }
    settings = json.loads((results / "report/report_settings.json").read_text())
    recorded = settings["inputs"]["scores"]["sft"]["prm"]
    assert recorded["sha256"] == hashlib.sha256((tiny_run / recorded["path"]).read_bytes()).hexdigest()
    assert (settings["evaluator_aggregation"], settings["num_draws"]) == (
        {"prm": "min", "orm": "last", "oprm": "min"},
        10,
    )
    assert (results / "report/best_of_n_aggregations.png").stat().st_size > 10_000

    # Relabelled copy: cluster 0 is right on even questions, cluster 1 on odd ones (cluster-consistent).
    order = {uid: i for i, uid in enumerate(sorted({r["unique_id"] for r in sampled}))}
    sampled = [dict(r, correct=r["answer_cluster"] == order[r["unique_id"]] % 2) for r in sampled]
    greedy = [dict(r, correct=order[r["unique_id"]] % 3 == 0) for r in greedy]
    sampled, greedy = (
        [
            dict(
                r,
                verdicts={**r["verdicts"], "lenient": {"correct": r["correct"], "answer_cluster": r["answer_cluster"]}},
            )
            for r in rows
        ]
        for rows in (sampled, greedy)
    )
    for name, rows in [("test.jsonl", sampled), ("test.greedy.jsonl", greedy)]:
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {
        "easy_levels": [1, 2, 3],
        "num_draws": 10,
        "seed": 0,
        "bootstrap": {"resamples": 100, "confidence": 0.95},
        "aggregations": ["min"],
        "evaluator_aggregation": {"prm": "min"},
        "grader": "lenient",
        "data_source": "math_jsonl",
        "huggingface_test_name": "HuggingFaceH4/MATH-500",
    }
    outs = {
        "metrics": "metrics.csv",
        "comparisons": "comparisons.csv",
        "gap": "gap_recovered.csv",
        "markdown": "report.md",
        "plot": "accuracy_vs_n.png",
        "aggregations": "best_of_n_aggregations.png",
        "settings": "report_settings.json",
    }
    command = [
        sys.executable,
        str(REPO_ROOT / "workflow/scripts/report.py"),
        "--params",
        json.dumps(params),
        "--sampled",
        f"sft={tmp_path / 'test.jsonl'}",
        "--greedy",
        f"sft={tmp_path / 'test.greedy.jsonl'}",
        "--scores",
        f"sft:prm={prm_path}",
        "--out",
        *(f"{k}={tmp_path / 'report' / name}" for k, name in outs.items()),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "workflow"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    relabelled = check(tmp_path / "report/metrics.csv", sampled, greedy)
    # The relabelling made the comparison non-trivial.
    assert any(float(r["accuracy"]) > 0 for r in relabelled if r["method"] == "weighted")


def test_changing_sampling_reruns_sampling_and_below_only(tiny_run, tmp_path):
    """Snakemake's params trigger: a temperature change re-runs sampling and what reads it only."""
    override = tmp_path / "hotter.yaml"
    override.write_text("sampling:\n  temperature: 0.9\n")
    tiny = str(REPO_ROOT / "tests" / "configs" / "tiny.yaml")
    jobs = planned_jobs("--directory", str(tiny_run), "--configfile", tiny, str(override), force=False)
    planned = {rule for rule, _ in jobs.values()}
    assert {"sample", "evaluate", "score", "report"} <= planned
    # Nothing upstream of sampling re-runs, nor SFT's greedy decoding (no temperature in it); the
    # RL policies are trained on sampled solutions, so they and their greedy samples do re-run.
    assert not planned & {"prepare_data", "base_model", "sft"}
    assert not {"results/samples/sft/test.greedy.jsonl", "results/eval/sft/test.greedy.jsonl"} & set(jobs)
    assert {"results/models/dpo_r1", "results/samples/dpo_r1/test.greedy.jsonl"} <= set(jobs)


def test_every_solution_has_one_score_per_unit(tiny_run):
    """Score positions line up with steps (+ answer) for every scored sample."""
    from easy2hard.formats import parse_solution

    results = tiny_run / "results"
    samples = {(r["unique_id"], r["sample_index"]): r for r in read_jsonl(results / "samples/sft/valid.jsonl")}
    for evaluator in ("prm", "orm", "oprm"):
        scores = read_jsonl(results / f"scores/{evaluator}/sft/valid.jsonl")
        assert len(scores) == len(samples)
        for row in scores:
            steps, answer = parse_solution(samples[(row["unique_id"], row["sample_index"])]["completion"])
            assert len(row["step_scores"]) == len(steps) + (answer is not None)
            assert all(0.0 < score < 1.0 for score in row["step_scores"])


def test_evaluator_data_uses_easy_questions_only(tiny_run):
    results = tiny_run / "results"
    easy_ids = {row["unique_id"] for row in read_jsonl(results / "data/train_easy.jsonl")}
    for evaluator in ("prm", "orm", "oprm"):
        rows = read_jsonl(results / f"evaluators/{evaluator}/train.jsonl")
        assert rows and {row["unique_id"] for row in rows} <= easy_ids


def test_rl_policies_are_generators_in_the_report(tiny_run):
    results = tiny_run / "results"
    with open(results / "report/metrics.csv", newline="") as handle:
        metrics = list(csv.DictReader(handle))
    # The Full SFT oracle, ICL and the gold-selected PPO checkpoint are on in tiny.yaml.
    generators = {"sft", "rest_em_r1", "dpo_r1", "ppo_r1", "sft_full", "icl", "ppo_r1_gold_selected"}
    assert {row["generator"] for row in metrics} == generators
    for generator in generators:
        methods = {row["method"] for row in metrics if row["generator"] == generator}
        assert methods == {"greedy", "majority", "weighted", "best_of_n"}, generator
    main_table = (results / "report/report.md").read_text().split("## Main result")[1].split("\n## ")[0]
    labels = {
        g: "ppo_r1 (selected with hard validation gold)" if g.endswith("_gold_selected") else g for g in generators
    }
    assert all(f"| {label} |" in main_table for label in labels.values())
    with open(results / "report/rl_rounds.csv", newline="") as handle:
        rounds = list(csv.DictReader(handle))
    assert {(row["algorithm"], row["round"]) for row in rounds} == {
        (a, r) for a in ("rest_em", "dpo", "ppo") for r in "01"
    }
    # Round 0 is the SFT policy, read from the same evaluation files as the main report.
    sft_greedy = read_jsonl(results / "eval/sft/valid.greedy.jsonl")
    row = next(
        r for r in rounds if (r["algorithm"], r["round"], r["decoding"], r["levels"]) == ("ppo", "0", "greedy", "all")
    )
    assert float(row["accuracy"]) == pytest.approx(
        100 * sum(r["correct"] for r in sft_greedy) / len(sft_greedy), abs=1e-3
    )
    stats = json.loads((results / "rl/rest_em_r1/stats.json").read_text())
    assert stats["hard_questions"] > 0 and stats["filter"]["hard_filter"] == "top_k"
    ppo_log = read_jsonl(results / "models/ppo_r1/train_log.jsonl")
    assert [r["step"] for r in ppo_log] == [1, 2] and all("kl" in r and "reward" in r for r in ppo_log)


def test_ppo_checkpoint_selected_with_hard_validation_gold(tiny_run):
    """snapshot_every 1 over 2 steps: the step-1 snapshot and the final policy compete on greedy
    validation accuracy; the winner is copied out and reported as such."""
    results = tiny_run / "results"
    manifest = json.loads((results / "rl/ppo_r1/snapshots/snapshots.json").read_text())
    assert manifest == {"steps": [1], "final_step": 2}
    with open(results / "rl/ppo_r1/gold_selection.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["step"] for row in table] == ["1", "2"] and [row["chosen"] for row in table].count("True") == 1
    chosen = next(row for row in table if row["chosen"] == "True")
    accuracies = [float(row["valid_greedy_accuracy"]) for row in table]
    assert float(chosen["valid_greedy_accuracy"]) == max(accuracies)
    source = Path(chosen["folder"]) if Path(chosen["folder"]).is_absolute() else tiny_run / chosen["folder"]
    assert (source / "model.safetensors").read_bytes() == (
        results / "models/ppo_r1_gold_selected/model.safetensors"
    ).read_bytes()


def test_rl_rounds_chain_from_the_previous_round(tmp_path):
    override = tmp_path / "rounds.yaml"
    override.write_text("rl:\n  rest_em: {rounds: 2}\n  dpo: {rounds: 2}\n  ppo: {rounds: 2}\n")
    jobs = planned_jobs("--configfile", str(override))
    rule, inputs = jobs["results/rl/rest_em_r2/train.jsonl"]
    assert rule == "rest_em_data"
    assert {"results/graded/rest_em_r1/train.jsonl", "results/scores/prm/rest_em_r1/train.jsonl"} <= set(inputs)
    assert jobs["results/models/rest_em_r2"][1][0] == "results/models/sft"  # init: sft, every round
    assert "results/models/dpo_r1" in jobs["results/models/dpo_r2"][1]  # initialisation and reference
    assert "results/models/sft" in jobs["results/models/dpo_r1"][1]
    ppo_inputs = set(jobs["results/models/ppo_r2"][1])
    assert {
        "results/models/ppo_r1",
        "results/rl/ppo_r1/value",
        "results/models/sft",
        "results/evaluators/prm/model",
    } <= ppo_inputs
    # The report shows the last round of each algorithm; the curves read every round.
    assert "results/eval/dpo_r2/test.jsonl" in jobs["results/report/metrics.csv"][1]
    assert {"results/eval/dpo_r1/valid.greedy.jsonl", "results/models/ppo_r1"} <= set(
        jobs["results/report/rl_rounds.csv"][1]
    )
    tainted = downstream_of_gold(jobs)
    assert set(tainted.values()) <= REPORTING_RULES, tainted


def test_unknown_report_generator_is_a_config_error(tmp_path):
    override = tmp_path / "bad.yaml"
    override.write_text("report:\n  generators: [sft, dpo_r3]\n")
    result = snakemake("-n", "--configfile", str(override), "--cores", "1")
    message = result.stdout + result.stderr
    assert result.returncode != 0 and "report.generators" in message and "unknown policy dpo_r3" in message


def test_every_output_records_its_provenance(tiny_run):
    results = tiny_run / "results"
    files = [
        p
        for folder in ("samples", "graded", "eval", "scores", "rl")
        for p in (results / folder).rglob("*.jsonl")
        if "/value/" not in str(p)
    ]
    files += list((results / "evaluators").glob("*/train.jsonl")) + list((results / "evaluators").glob("*/stats.json"))
    # The split's files: each named by prepare_data's rule, each with its own record.
    files += [
        p
        for folder in ("data", "gold", "oracle")
        for p in (results / folder).glob("*.json*")
        if not p.name.endswith(".provenance.json")
    ]
    assert len(files) > 30
    for path in files:
        record = json.loads(path.with_name(path.name + ".provenance.json").read_text())
        assert record["code_version"] and record["libraries"]["torch"] and "config" in record, path
    folders = [p for p in (results / "models").iterdir()] + list((results / "evaluators").glob("*/model"))
    folders += [results / "rl/ppo_r1/value"]
    for folder in folders:
        record = json.loads((folder / "provenance.json").read_text())
        assert record["command"] and record["grader_version"], folder
    sft = json.loads((results / "models/sft/provenance.json").read_text())
    assert sft["config"]["train"]["seed"] == 42 and "results/models/base" in sft["inputs"]["base"]
    assert not list(results.rglob("*.shards")) and not list(results.rglob("*.checkpoints"))


def test_key_effects_table_reads_a_finished_run(tiny_run):
    """tools/key_effects.py (the README's seed-robustness table) agrees with comparisons.csv."""
    import pandas as pd

    sys.path.insert(0, str(REPO_ROOT / "tools"))
    from key_effects import key_effects

    row = key_effects(tiny_run / "results")
    comparisons = pd.read_csv(tiny_run / "results" / "report" / "comparisons.csv")
    weighted = comparisons[
        (comparisons["comparison"] == "evaluator_vs_majority")
        & (comparisons["generator"] == "sft")
        & (comparisons["method"] == "weighted")
        & (comparisons["evaluator"] == "prm")
        & (comparisons["levels"] == "hard")
        & (comparisons["grader"] == "lenient")
    ].iloc[0]
    assert row["weighted (prm) − majority, hard"] == (
        f"{100 * weighted.difference:+.1f} [{100 * weighted.ci_low:+.1f}, {100 * weighted.ci_high:+.1f}]"
    )
    assert row["prm AUC hard (valid)"] == "n/a" or 0.0 <= float(row["prm AUC hard (valid)"]) <= 1.0
    assert all(value != "n/a" for key, value in row.items() if key.startswith(("rest_em", "dpo", "ppo")))
