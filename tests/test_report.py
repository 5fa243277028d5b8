import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from easy2hard.io import DataError, read_jsonl, write_jsonl
from easy2hard.report import COLUMNS, compute_metrics, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / "workflow" / "scripts" / "report.py"

# Hand-made generator "sft": (unique_id, level, sample clusters, correct cluster, greedy correct).
# maj@4 by hand: q1 1.0, q2 0.0, q3 tie 0.5, q4 1.0, q5 no answer 0.0, q6 four-way tie 0.25.
SFT = [
    ("q1", 1, [0, 0, 1, -1], 0, True),
    ("q2", 2, [0, 1, 1, 1], 0, True),
    ("q3", 3, [0, 1, 0, 1], 1, False),
    ("q4", 4, [2, 2, 2, 2], 2, False),
    ("q5", 5, [-1, -1, -1, -1], 0, False),
    ("q6", 4, [0, 1, 2, 3], 3, True),
]
# Generator "base" has easy questions only, so its hard-level groups are left out.
BASE = [
    ("q1", 1, [0, 0, 0, 1], 0, False),
    ("q2", 2, [1, 0, 1, 1], 0, True),
]


def sample_rows(spec):
    return [
        dict(unique_id=uid, level=level, subject="Algebra", sample_index=index,
             answer=None if cluster == -1 else f"a{cluster}", answer_cluster=cluster,
             correct=cluster == right)
        for uid, level, clusters, right, _ in spec
        for index, cluster in enumerate(clusters)
    ]


def greedy_rows(spec):
    return [
        dict(unique_id=uid, level=level, subject="Algebra", sample_index=0,
             answer="g", answer_cluster=0, correct=greedy_correct)
        for uid, level, _, _, greedy_correct in spec
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
def metrics(eval_files):
    sampled, greedy = eval_files
    return compute_metrics(sampled, greedy, easy_levels=[1, 2, 3], num_draws=200, seed=0)


def pick(df, generator, method, n, levels):
    row = df[(df.generator == generator) & (df.method == method) & (df.n == n) & (df.levels == levels)]
    assert len(row) == 1, (generator, method, n, levels)
    return row.iloc[0]


def test_columns_and_rows(metrics):
    assert list(metrics.columns) == COLUMNS
    sft = metrics[metrics.generator == "sft"]
    assert sorted(sft[sft.method == "majority"].n.unique()) == [1, 2, 4]
    assert (sft[sft.method == "greedy"].n == 1).all()
    assert (metrics[metrics.method == "greedy"]["std"] == 0).all()
    # 8 groups x (greedy + 3 sizes) for sft; base has 4 groups (easy, all, level_1, level_2).
    assert len(sft) == 32
    assert set(metrics[metrics.generator == "base"].levels) == {"easy", "all", "level_1", "level_2"}


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


def test_maj_at_1_close_to_fraction_correct(metrics):
    # Fractions of correct samples: q1 2/4, q2 1/4, q3 2/4, q4 4/4, q5 0, q6 1/4.
    row = pick(metrics, "sft", "majority", 1, "all")
    assert row.accuracy == pytest.approx(10 / 24, abs=0.03)
    assert row["std"] > 0


def test_num_problems(metrics):
    counts = metrics[(metrics.generator == "sft") & (metrics.method == "greedy")].set_index("levels").num_problems
    assert counts.to_dict() == {"easy": 3, "hard": 3, "all": 6,
                                "level_1": 1, "level_2": 1, "level_3": 1, "level_4": 2, "level_5": 1}


def test_deterministic_given_seed(eval_files, metrics):
    sampled, greedy = eval_files
    again = compute_metrics(sampled, greedy, easy_levels=[1, 2, 3], num_draws=200, seed=0)
    pd.testing.assert_frame_equal(metrics, again)


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


PROVENANCE = {"easy_levels": [1, 2, 3], "num_draws": 200, "seed": 0, "upstream": {"model": "tiny"}}


def test_write_report(metrics, tmp_path):
    out = tmp_path / "report"
    write_report(metrics, out, PROVENANCE)
    assert sorted(path.name for path in out.iterdir()) == ["accuracy_vs_n.png", "metrics.csv", "report.md"]

    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), metrics, check_dtype=False)

    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "| Greedy | 66.7 | 33.3 | 50.0 |" in text
    assert "| maj@4 | 50.0 ± 0.0 | 41.7 ± 0.0 | 45.8 ± 0.0 |" in text
    assert "| Problems | 3 | 3 | 6 |" in text
    assert "level_5" in text and '"model": "tiny"' in text
    # Majority rows in the report: every n for easy/hard/all, the largest n per level.
    majority = metrics[metrics.method == "majority"]
    shown = majority[majority.levels.isin(["easy", "hard", "all"]) | (majority.n == 4)]
    for row in shown.itertuples():
        assert f"{100 * row.accuracy:.1f} ± {100 * row.std:.1f}" in text

    png = (out / "accuracy_vs_n.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000


def test_write_report_needs_settings(metrics, tmp_path):
    with pytest.raises(ValueError, match="num_draws"):
        write_report(metrics, tmp_path / "report", {"easy_levels": [1, 2, 3], "seed": 0})
    assert not (tmp_path / "report" / "report.md").exists()


def run_cli(eval_files, out, *extra):
    sampled, greedy = eval_files
    command = [sys.executable, str(CLI), "--sampled", *(f"{g}={p}" for g, p in sampled.items()),
               "--greedy", *(f"{g}={p}" for g, p in greedy.items()),
               "--easy-levels", "1", "2", "3", "--num-draws", "20", "--seed", "1", "--out-dir", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_cli_end_to_end(eval_files, tmp_path):
    provenance = tmp_path / "provenance.json"
    provenance.write_text(json.dumps({"commit": "abc123"}))
    result = run_cli(eval_files, tmp_path / "report", "--provenance", str(provenance))
    assert result.returncode == 0, result.stderr
    csv = pd.read_csv(tmp_path / "report" / "metrics.csv")
    assert list(csv.columns) == COLUMNS and set(csv.generator) == {"sft", "base"}
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert '"commit": "abc123"' in text and "## sft" in text and "## base" in text
    assert (tmp_path / "report" / "accuracy_vs_n.png").stat().st_size > 10_000


def test_cli_reports_bad_data(eval_files, tmp_path):
    sampled, _ = eval_files
    write_jsonl(sampled["base"], read_jsonl(sampled["base"])[1:])
    result = run_cli(eval_files, tmp_path / "report")
    assert result.returncode == 1
    assert str(sampled["base"]) in result.stderr
    assert not (tmp_path / "report").exists()
