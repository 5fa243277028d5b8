import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from easy2hard import cli
from easy2hard.io import DataError, read_jsonl, write_jsonl
from easy2hard.report import COLUMNS, compute_metrics, report_aggregations, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / "workflow" / "scripts" / "report.py"
# The report rule's outputs (rules/report.smk): key -> file name.
REPORT_NAMES = {
    "metrics": "metrics.csv",
    "comparisons": "comparisons.csv",
    "gap": "gap_recovered.csv",
    "markdown": "report.md",
    "plot": "accuracy_vs_n.png",
    "aggregations": "best_of_n_aggregations.png",
    "settings": "report_settings.json",
}


def report_paths(out: Path) -> dict[str, Path]:
    return {key: out / name for key, name in REPORT_NAMES.items()}


# Hand-made generator "sft": (unique_id, level, subject, sample clusters, correct cluster, greedy correct).
# maj@4 by hand: q1 1.0, q2 0.0, q3 tie 0.5, q4 1.0, q5 no answer 0.0, q6 four-way tie 0.25.
SFT = [
    ("q1", 1, "Algebra", [0, 0, 1, -1], 0, True),
    ("q2", 2, "Algebra", [0, 1, 1, 1], 0, True),
    ("q3", 3, "Geometry", [0, 1, 0, 1], 1, False),
    ("q4", 4, "Algebra", [2, 2, 2, 2], 2, False),
    ("q5", 5, "Geometry", [-1, -1, -1, -1], 0, False),
    ("q6", 4, "Geometry", [0, 1, 2, 3], 3, True),
]
# Generator "base" has easy questions only (and no evaluator scores), so its hard groups are left out.
BASE = [
    ("q1", 1, "Algebra", [0, 0, 0, 1], 0, False),
    ("q2", 2, "Algebra", [1, 0, 1, 1], 0, True),
]
# PRM step scores of sft's samples (min | last of each list in the comments), chosen so that
# majority, weighted voting and best-of-N disagree:
PRM = {
    # min [.6 .6 .7 .1]: weighted 0: 1.2 > 1: 0.7 (right); best picks sample 2 (wrong).
    # last [.8 .6 .7 .95]: weighted right; best picks sample 3, which has no answer (wrong).
    "q1": [[0.6, 0.8], [0.6], [0.9, 0.7], [0.1, 0.95]],
    # weighted 0.9 beats three weak votes 0.85 (right, where majority is wrong); best sample 0 (right).
    "q2": [[0.9], [0.2], [0.3], [0.35]],
    "q3": [[0.5], [0.5], [0.5], [0.5]],  # everything ties: weighted 0.5, best 2/4
    "q4": [[0.1], [0.2], [0.3], [0.4]],  # all right: 1
    "q5": [[0.9], [0.8], [0.7], [0.6]],  # no answers: weighted 0, best picks a wrong sample
    "q6": [[0.1], [0.6], [0.2], [0.6]],  # weighted tie 1 (wrong) / 3 (right): 0.5; best tie: 0.5
}
# Weighted@4 and best-of-4 with min, by question (hand-computed above).
WEIGHTED_MIN = {"q1": 1.0, "q2": 1.0, "q3": 0.5, "q4": 1.0, "q5": 0.0, "q6": 0.5}
BEST_MIN = {"q1": 0.0, "q2": 1.0, "q3": 0.5, "q4": 1.0, "q5": 0.0, "q6": 0.5}


# Under the second grader ("prm800k") q1's right answer is written in a form only the lenient
# grader accepts (say an unreduced fraction): wrong there, for the samples and the greedy decode.
STRICT_WRONG = {"q1"}


def verdicts(correct, cluster, uid):
    return {
        "lenient": {"correct": correct, "answer_cluster": cluster},
        "prm800k": {"correct": correct and uid not in STRICT_WRONG, "answer_cluster": cluster},
    }


def sample_rows(spec):
    return [
        dict(
            unique_id=uid,
            level=level,
            subject=subject,
            sample_index=index,
            answer=None if cluster == -1 else f"a{cluster}",
            answer_cluster=cluster,
            correct=cluster == right,
            verdicts=verdicts(cluster == right, cluster, uid),
        )
        for uid, level, subject, clusters, right, _ in spec
        for index, cluster in enumerate(clusters)
    ]


def greedy_rows(spec):
    return [
        dict(
            unique_id=uid,
            level=level,
            subject=subject,
            sample_index=0,
            answer="g",
            answer_cluster=0,
            correct=greedy_correct,
            verdicts=verdicts(greedy_correct, 0, uid),
        )
        for uid, level, subject, _, _, greedy_correct in spec
    ]


def score_rows(step_scores):
    return [
        dict(unique_id=uid, sample_index=index, step_scores=steps)
        for uid, samples in step_scores.items()
        for index, steps in enumerate(samples)
    ]


@pytest.fixture
def eval_files(tmp_path):
    sampled, greedy = {}, {}
    for name, spec in [("sft", SFT), ("base", BASE)]:
        sampled[name] = tmp_path / "eval" / name / "test.jsonl"
        greedy[name] = tmp_path / "eval" / name / "test.greedy.jsonl"
        # Shuffled row order: the report must not depend on it.
        write_jsonl(sampled[name], sample_rows(spec)[::-1])
        write_jsonl(greedy[name], greedy_rows(spec))
    return sampled, greedy


@pytest.fixture
def score_files(tmp_path):
    """sft's scores: the hand-made PRM, and a flat "orm" that scores every step 0.5."""
    prm, orm = tmp_path / "scores" / "prm.jsonl", tmp_path / "scores" / "orm.jsonl"
    write_jsonl(prm, score_rows(PRM)[::-1])  # the join is by (unique_id, sample_index), not order
    write_jsonl(orm, score_rows({uid: [[0.5, 0.5]] * 4 for uid in PRM}))
    return {"sft": {"prm": prm, "orm": orm}}


@pytest.fixture
def metrics(eval_files, score_files):
    sampled, greedy = eval_files
    return compute_metrics(sampled, greedy, easy_levels=[1, 2, 3], num_draws=200, seed=0, scores=score_files)


def pick(df, generator, method, n, levels, evaluator="-", aggregation="-"):
    row = df[
        (df.generator == generator)
        & (df.method == method)
        & (df.n == n)
        & (df.levels == levels)
        & (df.evaluator == evaluator)
        & (df.aggregation == aggregation)
    ]
    assert len(row) == 1, (generator, method, n, levels, evaluator, aggregation)
    return row.iloc[0]


def mean_of(by_question, uids):
    return sum(by_question[uid] for uid in uids) / len(uids)


EASY, HARD = ["q1", "q2", "q3"], ["q4", "q5", "q6"]
SFT_GROUPS = {
    "easy",
    "hard",
    "all",
    "level_1",
    "level_2",
    "level_3",
    "level_4",
    "level_5",
    "subject:Algebra",
    "subject:Geometry",
}


def test_columns_and_rows(metrics):
    assert COLUMNS == [
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
    assert list(metrics.columns) == COLUMNS
    assert set(metrics.grader) == {"lenient"}
    sft = metrics[metrics.generator == "sft"]
    assert set(sft.levels) == SFT_GROUPS
    assert sorted(sft[sft.method == "majority"].n.unique()) == [1, 2, 4]
    assert (sft[sft.method == "greedy"].n == 1).all()
    assert (metrics[metrics.method == "greedy"]["std"] == 0).all()
    no_evaluator = metrics[metrics.method.isin(["greedy", "majority"])]
    assert (no_evaluator.evaluator == "-").all() and (no_evaluator.aggregation == "-").all()
    scored = sft[sft.method.isin(["weighted", "best_of_n"])]
    assert set(scored.evaluator) == {"prm", "orm"} and set(scored.aggregation) == {"min", "prod", "last", "mean"}
    # 10 groups x (greedy + 3 n of majority + 2 evaluators x 4 aggregations x 2 methods x 3 n).
    assert len(sft) == 10 * (1 + 3 + 2 * 4 * 2 * 3)
    # base has no scores and easy questions only: 5 groups x (greedy + 3 n).
    base = metrics[metrics.generator == "base"]
    assert set(base.levels) == {"easy", "all", "level_1", "level_2", "subject:Algebra"}
    assert set(base.method) == {"greedy", "majority"} and len(base) == 5 * 4


def test_greedy_accuracy_by_hand(metrics):
    assert pick(metrics, "sft", "greedy", 1, "easy").accuracy == pytest.approx(2 / 3)
    assert pick(metrics, "sft", "greedy", 1, "hard").accuracy == pytest.approx(1 / 3)
    assert pick(metrics, "sft", "greedy", 1, "all").accuracy == pytest.approx(1 / 2)
    assert pick(metrics, "base", "greedy", 1, "easy").accuracy == pytest.approx(1 / 2)


def test_maj_at_n_by_hand(metrics):
    easy = pick(metrics, "sft", "majority", 4, "easy")
    assert (easy.accuracy, easy["std"]) == (pytest.approx(1.5 / 3), 0.0)
    assert pick(metrics, "sft", "majority", 4, "hard").accuracy == pytest.approx(1.25 / 3)
    assert pick(metrics, "sft", "majority", 4, "all").accuracy == pytest.approx(2.75 / 6)
    assert pick(metrics, "sft", "majority", 4, "level_4").accuracy == pytest.approx(1.25 / 2)


def test_weighted_and_best_of_n_at_n_by_hand(metrics):
    for method, by_question in [("weighted", WEIGHTED_MIN), ("best_of_n", BEST_MIN)]:
        for group, uids in [("easy", EASY), ("hard", HARD), ("all", EASY + HARD)]:
            row = pick(metrics, "sft", method, 4, group, "prm", "min")
            assert (row.accuracy, row["std"], row.num_problems) == (
                pytest.approx(mean_of(by_question, uids)),
                0.0,
                3 if group != "all" else 6,
            )
    # Level 2 (q2): weighted voting overturns the wrong majority; q1 by the last step score.
    assert pick(metrics, "sft", "majority", 4, "level_2").accuracy == 0.0
    assert pick(metrics, "sft", "weighted", 4, "level_2", "prm", "min").accuracy == 1.0
    assert pick(metrics, "sft", "weighted", 4, "level_1", "prm", "last").accuracy == 1.0
    # Best-of-4 by the last score: sample 3 (0.95) has no answer, so it ranks last and sample 0 wins.
    assert pick(metrics, "sft", "best_of_n", 4, "level_1", "prm", "last").accuracy == 1.0


def test_flat_scores_reduce_to_majority_and_the_average_sample(metrics):
    """Equal weights make weighted voting majority voting (same subsets, so equal at every n);
    equal scores tie every sample with an answer (those without rank last), so best-of-N is the
    fraction of correct samples among them."""
    fraction_correct = {"q1": 2 / 3, "q2": 0.25, "q3": 0.5, "q4": 1.0, "q5": 0.0, "q6": 0.25}
    for n in (1, 2, 4):
        for group in SFT_GROUPS:
            assert (
                pick(metrics, "sft", "weighted", n, group, "orm", "min").accuracy
                == pick(metrics, "sft", "majority", n, group).accuracy
            )
    assert pick(metrics, "sft", "best_of_n", 4, "all", "orm", "prod").accuracy == pytest.approx(
        mean_of(fraction_correct, EASY + HARD)
    )


def test_every_method_agrees_at_n_1(metrics):
    """One sample: every method scores it, and all use the same random subsets."""
    for group in SFT_GROUPS:
        majority = pick(metrics, "sft", "majority", 1, group)
        for method in ("weighted", "best_of_n"):
            for aggregation in ("min", "mean"):
                row = pick(metrics, "sft", method, 1, group, "prm", aggregation)
                assert (row.accuracy, row["std"]) == (majority.accuracy, majority["std"])
    # ... and the expectation of one sample is the fraction of correct samples (10 of 24).
    assert pick(metrics, "sft", "best_of_n", 1, "all", "prm", "min").accuracy == pytest.approx(10 / 24, abs=0.03)


def test_subject_rows(metrics):
    algebra, geometry = ["q1", "q2", "q4"], ["q3", "q5", "q6"]
    assert pick(metrics, "sft", "greedy", 1, "subject:Algebra").accuracy == pytest.approx(2 / 3)
    assert pick(metrics, "sft", "greedy", 1, "subject:Geometry").accuracy == pytest.approx(1 / 3)
    assert pick(metrics, "sft", "majority", 4, "subject:Geometry").accuracy == pytest.approx(0.75 / 3)
    row = pick(metrics, "sft", "weighted", 4, "subject:Algebra", "prm", "min")
    assert (row.accuracy, row.num_problems) == (pytest.approx(mean_of(WEIGHTED_MIN, algebra)), 3)
    assert pick(metrics, "sft", "best_of_n", 4, "subject:Geometry", "prm", "min").accuracy == pytest.approx(
        mean_of(BEST_MIN, geometry)
    )


def test_maj_at_1_close_to_fraction_correct(metrics):
    # Fractions of correct samples: q1 2/4, q2 1/4, q3 2/4, q4 4/4, q5 0, q6 1/4.
    row = pick(metrics, "sft", "majority", 1, "all")
    assert row.accuracy == pytest.approx(10 / 24, abs=0.03)
    assert row["std"] > 0


def test_num_problems(metrics):
    counts = metrics[(metrics.generator == "sft") & (metrics.method == "greedy")].set_index("levels").num_problems
    assert counts.to_dict() == {
        "easy": 3,
        "hard": 3,
        "all": 6,
        "level_1": 1,
        "level_2": 1,
        "level_3": 1,
        "level_4": 2,
        "level_5": 1,
        "subject:Algebra": 3,
        "subject:Geometry": 3,
    }


def test_deterministic_given_seed(eval_files, score_files, metrics):
    sampled, greedy = eval_files
    again = compute_metrics(sampled, greedy, easy_levels=[1, 2, 3], num_draws=200, seed=0, scores=score_files)
    pd.testing.assert_frame_equal(metrics, again)


def test_aggregations_subset(eval_files, score_files):
    sampled, greedy = eval_files
    df = compute_metrics(sampled, greedy, [1, 2, 3], 10, 0, score_files, aggregations=["last"])
    assert set(df.aggregation) == {"-", "last"}
    assert report_aggregations(["prod", "last"], {"prm": "min", "orm": "last"}) == ["prod", "last", "min"]
    assert report_aggregations(["min", "last", "min"], {"prm": "min"}) == ["min", "last"]
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        report_aggregations(["max"], {"prm": "min"})


def test_missing_score_row_raises(eval_files, score_files):
    sampled, greedy = eval_files
    prm = score_files["sft"]["prm"]
    write_jsonl(prm, [row for row in read_jsonl(prm) if (row["unique_id"], row["sample_index"]) != ("q3", 2)])
    with pytest.raises(DataError, match=rf"{prm.name}: no scores for q3 sample 2 of .*test\.jsonl"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0, score_files)


def test_extra_or_bad_score_rows_raise(eval_files, score_files):
    sampled, greedy = eval_files
    prm = score_files["sft"]["prm"]
    rows = read_jsonl(prm)
    write_jsonl(prm, rows + [dict(unique_id="q9", sample_index=0, step_scores=[0.5])])
    with pytest.raises(DataError, match="q9 sample 0, which is not a sample"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0, score_files)
    write_jsonl(prm, rows + [rows[0]])
    with pytest.raises(DataError, match="scored twice"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0, score_files)
    rows[0]["step_scores"] = [0.5, float("nan")]
    write_jsonl(prm, rows)
    with pytest.raises(DataError, match="finite numbers"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0, score_files)


def test_scores_for_an_unknown_generator_raise(eval_files, score_files):
    sampled, greedy = eval_files
    with pytest.raises(ValueError, match="without samples"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0, {"other": score_files["sft"]})


def test_different_sample_counts_raise(eval_files):
    sampled, greedy = eval_files
    rows = read_jsonl(sampled["sft"])
    write_jsonl(sampled["sft"], rows[1:])
    with pytest.raises(DataError, match=r"test\.jsonl.*different sample counts"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0)


def test_greedy_must_cover_the_same_questions(eval_files):
    sampled, greedy = eval_files
    write_jsonl(greedy["sft"], greedy_rows(SFT)[:-1])
    with pytest.raises(DataError, match="greedy questions differ"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0)


def test_inconsistent_cluster_correctness_raises(eval_files):
    sampled, greedy = eval_files
    rows = read_jsonl(sampled["sft"])
    # q1 sample 0 shares cluster 0 with sample 1; make only one of them wrong.
    first = next(row for row in rows if row["unique_id"] == "q1" and row["sample_index"] == 0)
    first["correct"] = False
    write_jsonl(sampled["sft"], rows)
    with pytest.raises(DataError, match="both correct and incorrect"):
        compute_metrics(sampled, greedy, [1, 2, 3], 10, 0)


SETTINGS = {
    "easy_levels": [1, 2, 3],
    "num_draws": 200,
    "seed": 0,
    "aggregations": ["min", "prod", "last", "mean"],
    "evaluator_aggregation": {"prm": "min", "orm": "min"},
    "provenance_file": "provenance.json",
    "upstream": {"code_version": "abc123", "grader_version": "g1"},
}


def test_write_report(metrics, tmp_path):
    out = tmp_path / "report"
    write_report(metrics, report_paths(out), SETTINGS)
    assert sorted(path.name for path in out.iterdir()) == sorted(REPORT_NAMES.values())

    back = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values={"ci_low": [""], "ci_high": [""]})
    pd.testing.assert_frame_equal(back, metrics, check_dtype=False)
    assert json.loads((out / "report_settings.json").read_text()) == SETTINGS

    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# ")
    # The main table: every method at N = 4 with the default aggregation, easy / hard / all.
    main = text.split("## Main result")[1].split("\n## ")[0]
    assert "| Policy | Method | easy | hard | all |" in main
    assert "| sft | Greedy | 66.7 | 33.3 | 50.0 |" in main
    assert "| sft | Majority@4 | 50.0 | 41.7 | 45.8 |" in main
    assert "| sft | Weighted@4 (prm, min) | 83.3 | 50.0 | 66.7 |" in main
    assert "| sft | Best-of-4 (prm, min) | 50.0 | 50.0 | 50.0 |" in main
    assert "| sft | Weighted@4 (orm, min) | 50.0 | 41.7 | 45.8 |" in main
    assert "| sft | Problems | 3 | 3 | 6 |" in main
    assert "| base | Majority@4 |" in main and "| base | Problems | 2 | 0 | 2 |" in main
    # The maj@n curve table, with ± std, for every n.
    assert "| maj@4 | 50.0 ± 0.0 | 41.7 ± 0.0 | 45.8 ± 0.0 |" in text
    majority = metrics[(metrics.method == "majority") & metrics.levels.isin(["easy", "hard", "all"])]
    for row in majority.itertuples():
        assert f"{100 * row.accuracy:.1f} ± {100 * row.std:.1f}" in text
    # Per level and per subject at N.
    assert "| Weighted@4 (prm, min) | 100.0 | 100.0 | 50.0 | 75.0 | 0.0 |" in text
    assert "|  | Algebra | Geometry |" in text and "| Weighted@4 (prm, min) | 100.0 | 33.3 |" in text
    # Provenance: a pointer, not the config.
    provenance = text.split("## Provenance")[1]
    assert "provenance.json" in provenance and "report_settings.json" in provenance and "`abc123`" in provenance
    assert "```" not in text

    for name in ("accuracy_vs_n.png", "best_of_n_aggregations.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name


def test_write_report_without_evaluators(eval_files, tmp_path):
    sampled, greedy = eval_files
    df = compute_metrics(sampled, greedy, [1, 2, 3], 10, 0)
    write_report(df, report_paths(tmp_path / "report"), SETTINGS)
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| sft | Majority@4 |" in text and "Weighted" not in text.split("## sft")[1]
    assert (tmp_path / "report" / "best_of_n_aggregations.png").read_bytes()[:4] == b"\x89PNG"


def test_write_report_needs_settings(metrics, tmp_path):
    with pytest.raises(ValueError, match="num_draws"):
        write_report(
            metrics,
            report_paths(tmp_path / "report"),
            {"easy_levels": [1, 2, 3], "seed": 0, "evaluator_aggregation": {"prm": "min"}},
        )
    assert not (tmp_path / "report" / "report.md").exists()


CLI_PARAMS = {
    "easy_levels": [1, 2, 3],
    "num_draws": 20,
    "seed": 1,
    "bootstrap": {"resamples": 200, "confidence": 0.9},
    "aggregations": ["prod", "last"],
    "evaluator_aggregation": {"prm": "min", "orm": "min"},
    "grader": "lenient",
    "data_source": "math_jsonl",
    "huggingface_test_name": "HuggingFaceH4/MATH-500",
}


def run_cli(eval_files, out, *extra, scores=None, params=CLI_PARAMS, outs=None):
    sampled, greedy = eval_files
    score_args = [f"{g}:{e}={p}" for g, by_e in (scores or {}).items() for e, p in by_e.items()]
    outs = [f"{key}={path}" for key, path in report_paths(out).items()] if outs is None else outs
    command = [
        sys.executable,
        str(CLI),
        "--params",
        json.dumps(params),
        "--sampled",
        *(f"{g}={p}" for g, p in sampled.items()),
        "--greedy",
        *(f"{g}={p}" for g, p in greedy.items()),
        "--scores",
        *score_args,
        "--out",
        *outs,
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_cli_end_to_end(eval_files, score_files, tmp_path):
    provenance = tmp_path / "provenance.json"
    provenance.write_text(json.dumps({"code_version": "abc123", "config": {"huge": "config"}}))
    result = run_cli(eval_files, tmp_path / "report", "--provenance", str(provenance), scores=score_files)
    assert result.returncode == 0, result.stderr
    csv = pd.read_csv(tmp_path / "report" / "metrics.csv", keep_default_na=False)
    assert list(csv.columns) == COLUMNS and set(csv.generator) == {"sft", "base"}
    assert set(csv.aggregation) == {"-", "prod", "last", "min"}  # the default is always computed
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "`abc123`" in text and "huge" not in text and "## sft" in text and "## base" in text
    settings = json.loads((tmp_path / "report" / "report_settings.json").read_text())
    assert (settings["num_draws"], settings["seed"], settings["evaluator_aggregation"]) == (
        20,
        1,
        {"prm": "min", "orm": "min"},
    )
    assert settings["aggregations"] == ["prod", "last", "min"]
    prm = settings["inputs"]["scores"]["sft"]["prm"]
    assert prm["path"] == str(score_files["sft"]["prm"]) and len(prm["sha256"]) == 64
    assert set(settings["inputs"]["sampled"]) == {"sft", "base"}
    assert (tmp_path / "report" / "accuracy_vs_n.png").stat().st_size > 10_000


def test_cli_reports_bad_data(eval_files, tmp_path):
    sampled, _ = eval_files
    write_jsonl(sampled["base"], read_jsonl(sampled["base"])[1:])
    result = run_cli(eval_files, tmp_path / "report")
    assert result.returncode == 1
    assert str(sampled["base"]) in result.stderr
    assert not (tmp_path / "report").exists()


def test_cli_reports_missing_scores(eval_files, score_files, tmp_path):
    prm = score_files["sft"]["prm"]
    write_jsonl(prm, read_jsonl(prm)[1:])
    result = run_cli(eval_files, tmp_path / "report", scores=score_files)
    assert result.returncode == 1
    assert str(prm) in result.stderr and "no scores for" in result.stderr


def test_cli_rejects_bad_params_and_paths(eval_files, tmp_path):
    """--params needs every key (an error names the missing one) and known aggregation names;
    --out needs a path for every output key; a KEY=PATH without `=` names its option and value."""
    out = tmp_path / "report"
    result = run_cli(eval_files, out, params={k: v for k, v in CLI_PARAMS.items() if k != "seed"})
    assert result.returncode == 2 and "missing key 'seed'" in result.stderr
    result = run_cli(eval_files, out, params={**CLI_PARAMS, "bootstrap": {"resamples": 200}})
    assert result.returncode == 2 and "--params bootstrap: missing key 'confidence'" in result.stderr
    result = run_cli(eval_files, out, params={**CLI_PARAMS, "evaluator_aggregation": {"prm": "max"}})
    assert result.returncode == 2 and "unknown aggregation 'max'" in result.stderr
    result = run_cli(eval_files, out, outs=[f"{k}={p}" for k, p in report_paths(out).items() if k != "plot"])
    assert (
        result.returncode == 1
        and "--out: expected exactly the keys" in result.stderr
        and "missing: plot" in result.stderr
    )
    result = run_cli(eval_files, out, outs=["metrics", *(f"{k}={p}" for k, p in report_paths(out).items())])
    assert result.returncode == 1 and "--out: expected KEY=PATH, got 'metrics'" in result.stderr
    assert not out.exists()


def test_key_paths():
    assert cli.key_paths(["a=x.jsonl", "b:c=d=e"], "--opt") == {"a": "x.jsonl", "b:c": "d=e"}
    for bad in (["a"], ["=x"], ["a="]):
        with pytest.raises(SystemExit, match=f"--opt: expected GEN=PATH, got {bad[0]!r}"):
            cli.key_paths(bad, "--opt", "GEN=PATH")
    with pytest.raises(SystemExit, match="--opt: 'a' given twice"):
        cli.key_paths(["a=x", "a=y"], "--opt")


def test_cli_reports_which_back_end_sampled(eval_files, tmp_path):
    """report_settings.json and report.md name the sampling back end of every policy's test
    solutions, read through the evaluation's provenance to the samples' provenance, and warn when
    some fell back to generate on a model the engine should have run."""
    from easy2hard import provenance

    sampled, greedy = eval_files
    engine = {
        "mode": "auto",
        "backend": "engine",
        "prompts": {"engine": 6},
        "fallbacks": [],
        "unexpected_fallback": False,
    }
    fallback = {
        "mode": "auto",
        "backend": "hf",
        "prompts": {"hf": 2},
        "unexpected_fallback": True,
        "fallbacks": [{"reason": "its forward takes no position_ids", "expected": False}],
    }
    for generator, record in (("sft", engine), ("base", fallback)):
        samples = tmp_path / f"{generator}.samples.jsonl"
        samples.write_text("")
        provenance.write(samples, {"sampling": record})
        provenance.write(sampled[generator], {"inputs": {"samples": {str(samples): {}}}})
    result = run_cli(eval_files, tmp_path / "report")
    assert result.returncode == 0, result.stderr
    settings = json.loads((tmp_path / "report" / "report_settings.json").read_text())
    assert settings["sampling"] == {
        "sft": {"sampled": engine, "greedy": None},
        "base": {"sampled": fallback, "greedy": None},
    }
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8").split("## Provenance")[1]
    assert "sft sampled: engine; base sampled: hf" in text
    assert "Warning: some samples fell back to `generate`" in text and "its forward takes no position_ids" in text


def test_a_second_grader_at_the_largest_n(eval_files, score_files, tmp_path):
    """The other grader's verdicts (the rows' `verdicts`) give rows at n = N only, labelled by the
    grader, and report.md a second main table; the curves and plots stay the configured grader's."""
    sampled, greedy = eval_files
    df = compute_metrics(
        sampled, greedy, [1, 2, 3], 50, 0, score_files, ["min"], grader="lenient", other_graders=["prm800k"]
    )
    strict = df[df.grader == "prm800k"]
    assert set(strict.n) == {1, 4} and set(strict[strict.method != "greedy"].n) == {4}
    lenient = df[df.grader == "lenient"]
    assert sorted(lenient[lenient.method == "majority"].n.unique()) == [1, 2, 4]
    # q1 (easy) is right under the lenient grader by majority and greedy, wrong under the strict one.
    assert pick(lenient, "sft", "majority", 4, "easy").accuracy == pytest.approx(0.5)
    assert pick(strict, "sft", "majority", 4, "easy").accuracy == pytest.approx(1 / 6)  # q2 0, q3 0.5
    assert pick(strict, "sft", "greedy", 1, "easy").accuracy == pytest.approx(1 / 3)
    assert pick(strict, "sft", "majority", 4, "hard").accuracy == pick(lenient, "sft", "majority", 4, "hard").accuracy
    write_report(df, report_paths(tmp_path / "report"), {**SETTINGS, "grader": "lenient"})
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Main result (largest N, `lenient` grader)" in text
    second = text.split("## Main result under the `prm800k` grader")[1].split("\n## ")[0]
    assert "| sft | Majority@4 | 16.7 | 41.7 | 29.2 |" in second and "authors'" in second
    missing = tmp_path / "old.jsonl"
    write_jsonl(missing, [{k: v for k, v in row.items() if k != "verdicts"} for row in read_jsonl(sampled["sft"])])
    with pytest.raises(DataError, match="verdicts.prm800k"):
        compute_metrics({"sft": missing}, {"sft": greedy["sft"]}, [1, 2, 3], 5, 0, other_graders=["prm800k"])


def test_cis_at_the_largest_n_and_paired_comparisons(eval_files, score_files, tmp_path):
    """Rows at N (and greedy) carry a CI over problems, the others none; the comparisons pair
    methods on the same resampled problems, and comparing a policy with itself gives exactly 0."""
    from easy2hard.report import COMPARISON_COLUMNS, Bootstrap, paired_comparisons

    sampled, greedy = eval_files
    bootstrap = Bootstrap(resamples=500, seed=0, confidence=0.95)
    per_problem = {}
    df = compute_metrics(
        sampled, greedy, [1, 2, 3], 20, 0, score_files, ["min", "last"], bootstrap=bootstrap, per_problem=per_problem
    )
    at_n = df[(df.method == "greedy") | (df.n == 4)]
    assert at_n.ci_low.notna().all() and df.drop(at_n.index).ci_low.isna().all()
    assert ((at_n.ci_low <= at_n.accuracy + 1e-12) & (at_n.accuracy <= at_n.ci_high + 1e-12)).all()
    row = pick(df, "sft", "majority", 4, "all")  # six problems scored 1, 0, .5, 1, 0, .25: a wide interval
    assert row.ci_low < row.accuracy < row.ci_high and row.ci_high - row.ci_low > 0.3
    comparisons = paired_comparisons(per_problem, bootstrap, {"prm": "min", "orm": "last"})
    assert list(comparisons.columns) == COMPARISON_COLUMNS
    assert set(comparisons.comparison) == {"evaluator_vs_majority", "policy_vs_sft"}
    # weighted@4 (prm, min) - majority@4 on sft's easy problems: q1 1-1, q2 1-0, q3 .5-.5 -> +1/3, paired.
    weighted = comparisons[
        (comparisons.generator == "sft")
        & (comparisons.method == "weighted")
        & (comparisons.evaluator == "prm")
        & (comparisons.levels == "easy")
    ].iloc[0]
    assert weighted.difference == pytest.approx(1 / 3) and weighted.aggregation == "min"
    assert weighted.ci_low >= 0 and weighted.ci_high <= 1
    # ORM rows use its own aggregation (last).
    assert set(comparisons[comparisons.evaluator == "orm"].aggregation) == {"last"}
    # base answered q1 and q2 only: compared with sft on those two shared (easy) problems.
    versus = comparisons[comparisons.comparison == "policy_vs_sft"]
    assert set(versus.generator) == {"base"} and set(versus.method) == {"greedy", "majority"}
    assert set(versus.levels) == {"easy", "all", "level_1", "level_2", "subject:Algebra"} and set(
        versus.num_problems
    ) <= {1, 2}
    # A policy compared with an identical copy of itself: difference exactly 0, CI [0, 0].
    same = {("lenient", "copy", *key[2:]) if key[1] == "base" else key: value for key, value in per_problem.items()}
    same.update({("lenient", "copy", *key[2:]): value for key, value in per_problem.items() if key[1] == "sft"})
    zero = paired_comparisons(same, bootstrap, {"prm": "min", "orm": "last"})
    zero = zero[zero.comparison == "policy_vs_sft"]
    assert len(zero) and (zero.difference == 0).all() and (zero.ci_low == 0).all() and (zero.ci_high == 0).all()
    write_report(
        df,
        report_paths(tmp_path / "report"),
        {**SETTINGS, "bootstrap": {"resamples": 500, "confidence": 0.95, "seed": 0}},
        comparisons,
    )
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "95 % confidence interval of the accuracy over test problems" in text
    assert "| sft | Majority@4 | 50.0 [" in text
    # Three easy problems, differences 0, 1, 0: the interval reaches 0, so the cell is not bold.
    assert "### Paired differences" in text and "| sft | Weighted@N (prm, min) − Majority@N | +33.3 [+0.0, +" in text
    assert "| sft | Weighted@N (orm, last) − Majority@N | +0.0 [+0.0, +0.0] |" in text  # flat weights: majority
    assert (tmp_path / "report" / "comparisons.csv").read_text().startswith(",".join(COMPARISON_COLUMNS))


def _per_problem(scores: dict, levels=(1, 1, 4, 4)):
    """per_problem entries of policy sft from {(method, evaluator, aggregation): per-problem scores}."""
    from easy2hard.report import PerProblem

    levels = np.array(levels)
    masks = {"easy": np.isin(levels, [1, 2, 3]), "hard": np.isin(levels, [4, 5]), "all": np.ones(len(levels), bool)}
    uids = [f"q{i}" for i in range(len(levels))]
    return {("lenient", "sft", *key): PerProblem(uids, np.array(value, float), masks) for key, value in scores.items()}


def test_supervision_gap_recovered_by_hand():
    from easy2hard.report import Bootstrap, _comparison_section, paired_comparisons, supervision_gap

    per_problem = _per_problem(
        {
            ("majority", "-", "-"): [0, 0, 1, 0],
            ("weighted", "orm", "last"): [1, 0, 1, 0],  # +1 problem over voting
            ("weighted", "orm_full", "last"): [1, 1, 1, 0],  # +2 problems: half the gap recovered
            ("best_of_n", "orm", "last"): [0, 0, 1, 0],
            ("best_of_n", "orm_full", "last"): [0, 0, 1, 0],  # the oracle does not beat voting: undefined
        }
    )
    bootstrap = Bootstrap(resamples=300, seed=0, confidence=0.95)
    gap = supervision_gap(per_problem, bootstrap, {"orm": "last"})
    weighted = gap[(gap.method == "weighted") & (gap.levels == "all")].iloc[0]
    assert (weighted.easy_to_hard, weighted.oracle_accuracy, weighted.majority) == (0.5, 0.75, 0.25)
    assert weighted.recovered == pytest.approx(0.5) and weighted.oracle == "orm_full"
    easy = gap[(gap.method == "weighted") & (gap.levels == "easy")].iloc[0]
    assert easy.recovered == pytest.approx(0.5)  # q0: +1 of +1 ... q1: 0 of +1
    best = gap[gap.method == "best_of_n"]
    assert best.recovered.isna().all() and (best.note.str.startswith("undefined")).all()
    comparisons = paired_comparisons(per_problem, bootstrap, {"orm": "last"})
    oracle = comparisons[
        (comparisons.comparison == "easy_vs_oracle")
        & (comparisons.levels == "all")
        & (comparisons.method == "weighted")
    ].iloc[0]
    assert oracle.difference == pytest.approx(-0.25) and oracle.versus_evaluator == "orm_full"
    # report.md names the oracle it is compared with.
    text = "\n".join(_comparison_section(comparisons, {}, "comparisons.csv"))
    assert "| sft | Weighted@N (orm, last) − Weighted@N (orm_full, last) | -50.0 [" in text
    assert "| sft | Weighted@N (orm, last) − Majority@N |" in text


def test_the_easy_trained_sft_is_compared_with_its_full_oracle():
    """sft minus sft_full (greedy and majority@N): the baseline policy has an oracle too."""
    from easy2hard.report import Bootstrap, PerProblem, paired_comparisons

    levels = [1, 2, 4, 5]
    masks = {"easy": np.isin(levels, [1, 2, 3]), "hard": np.isin(levels, [4, 5]), "all": np.ones(4, bool)}
    uids = ["q0", "q1", "q2", "q3"]
    per_problem = {
        ("lenient", generator, method, "-", "-"): PerProblem(uids, np.array(scores, float), masks)
        for generator, method, scores in [
            ("sft", "greedy", [1, 0, 0, 0]),
            ("sft_full", "greedy", [1, 1, 1, 0]),
            ("sft", "majority", [1, 1, 0, 0]),
            ("sft_full", "majority", [1, 1, 0, 0]),
        ]
    }
    comparisons = paired_comparisons(per_problem, Bootstrap(resamples=200, seed=0, confidence=0.95), {})
    rows = comparisons[(comparisons.comparison == "easy_vs_oracle") & (comparisons.levels == "all")]
    assert set(zip(rows.generator, rows.method, rows.versus_generator)) == {
        ("sft", "greedy", "sft_full"),
        ("sft", "majority", "sft_full"),
    }
    assert rows.set_index("method").difference.to_dict() == pytest.approx({"greedy": -0.5, "majority": 0.0})
    assert not (comparisons.comparison == "policy_vs_sft").any()
