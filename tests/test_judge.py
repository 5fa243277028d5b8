"""Grading of sampled solutions: answers, clusters, and verdicts consistent within a cluster."""

from easy2hard.judge import judge_samples


def sample(uid, index, answer):
    return {"unique_id": uid, "sample_index": index, "level": 1, "completion": f"Some step.\n\n# Answer\n\n{answer}"}


def test_a_cluster_shares_one_verdict():
    # \frac{\sqrt{9}}{9} and 0.333333 can land in one cluster through the lenient symbolic check
    # while being graded differently against 1/3 one by one; members must agree.
    samples = [sample("q", 0, r"\frac{\sqrt{9}}{9}"), sample("q", 1, "0.333333"), sample("q", 2, "7")]
    judged = judge_samples(samples, {"q": r"\frac{1}{3}"}, timeout=5.0, workers=1)
    by_cluster = {}
    for row in judged:
        by_cluster.setdefault(row["answer_cluster"], set()).add(row["correct"])
    assert all(len(verdicts) == 1 for verdicts in by_cluster.values())
    assert judged[2]["correct"] is False


def test_rows_keep_their_fields_and_order():
    samples = [
        sample("a", 0, "2"),
        sample("a", 1, r"\frac{4}{2}"),
        {"unique_id": "b", "sample_index": 0, "level": 4, "completion": "no answer"},
    ]
    judged = judge_samples(samples, {"a": "2", "b": "5"}, timeout=5.0, workers=1)
    assert [(r["unique_id"], r["sample_index"]) for r in judged] == [("a", 0), ("a", 1), ("b", 0)]
    assert [r["correct"] for r in judged] == [True, True, False]
    assert judged[0]["answer_cluster"] == judged[1]["answer_cluster"] == 0
    assert judged[2]["answer"] is None and judged[2]["answer_cluster"] == -1
    assert judged[0]["completion"] == samples[0]["completion"]


def test_questions_without_gold_stay_ungraded():
    judged = judge_samples([sample("easy", 0, "3"), sample("hard", 0, "4")], {"easy": "3"}, timeout=5.0, cluster=False)
    assert [r["correct"] for r in judged] == [True, None]
    assert "answer_cluster" not in judged[0]


def test_every_mode_records_both_graders_and_the_configured_one_on_top():
    from easy2hard.grading import GradingStats

    samples = [sample("a", 0, r"\frac{2}{4}"), sample("a", 1, r"\frac12"), sample("a", 2, "0.25"), sample("a", 3, "x")]
    stats = GradingStats()
    judged = judge_samples(
        samples, {"a": r"\frac{1}{2}"}, timeout=5.0, workers=1, mode="prm800k", every_mode=True, stats=stats
    )
    lenient = [r["verdicts"]["lenient"] for r in judged]
    strict = [r["verdicts"]["prm800k"] for r in judged]
    assert [v["correct"] for v in lenient] == [True, True, False, False]
    assert [v["answer_cluster"] for v in lenient] == [0, 0, 1, 2]
    assert [v["correct"] for v in strict] == [False, True, False, False]
    assert [v["answer_cluster"] for v in strict] == [0, 1, 2, 3]
    # The configured mode (here prm800k) fills the fields every later stage reads.
    assert [(r["correct"], r["answer_cluster"]) for r in judged] == [
        (v["correct"], v["answer_cluster"]) for v in strict
    ]
    assert stats.pairs > 0 and stats.timeouts == 0
