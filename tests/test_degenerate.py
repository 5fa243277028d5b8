"""What real models produce early in a project, fed to the real stage scripts: no correct sample on
a question, solutions without steps or without an answer, an evaluator whose scores all sit
together, AUC without both classes, a PPO round where every rollout earns the same reward. Each
stage goes on with a count, or stops with a message that says what is wrong and what to change."""

import json

import pytest
from test_reliability import policy_dir, run_script, write_jsonl  # noqa: F401 (a fixture)

from easy2hard import training

TRAIN = {
    "learning_rate": 1e-3,
    "epochs": 1,
    "global_batch_size": 2,
    "micro_batch_size": 2,
    "max_length": 256,
    "warmup_ratio": 0.03,
    "deepspeed": "never",
    "checkpoint_every": 0,
    "log_every": 1,
    "seed": 0,
}
ORM = {"max_ratio": 3, "reference_solutions": False, "seed": 0}
QUESTIONS = [
    {"unique_id": f"q{i}", "problem": f"What is {i} + 1?", "level": level} for i, level in enumerate([1, 1, 2, 4, 5])
]


def sample(uid: str, index: int, completion: str, correct, level: int = 1) -> dict:
    return {
        "unique_id": uid,
        "level": level,
        "sample_index": index,
        "completion": completion,
        "correct": correct,
        "finished": True,
    }


def solution(answer: str) -> str:
    return f"We add one.\n\n# Answer\n\n{answer}"


def scores_for(samples: list[dict], value=lambda s: 0.5) -> list[dict]:
    return [
        {"unique_id": s["unique_id"], "sample_index": s["sample_index"], "step_scores": [value(s)] * 2} for s in samples
    ]


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


# --- ORM: a question without a correct sample is dropped; none left is an error saying why ---------------------


def test_orm_drops_questions_without_a_correct_sample_and_an_empty_orm_says_why(policy_dir, tmp_path):
    questions = write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    graded = [
        sample("q0", 0, solution("1"), True),
        sample("q0", 1, solution("2"), False),
        sample("q1", 0, solution("5"), False),
        sample("q1", 1, solution("6"), False),
    ]
    out, stats = tmp_path / "orm.jsonl", tmp_path / "stats.json"
    result = run_script(
        "orm_data.py",
        "--graded",
        str(write_jsonl(tmp_path / "graded.jsonl", graded)),
        "--questions",
        str(questions),
        "--out",
        str(out),
        "--stats",
        str(stats),
        params=ORM,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(stats.read_text())
    assert counts["balancing"]["dropped_all_wrong"] == 1 and counts["examples"] == 2
    assert "empty_because" not in counts

    no_correct = [row for row in graded if row["unique_id"] == "q1"]
    result = run_script(
        "orm_data.py",
        "--graded",
        str(write_jsonl(tmp_path / "wrong.jsonl", no_correct)),
        "--questions",
        str(questions),
        "--out",
        str(out),
        "--stats",
        str(stats),
        params=ORM,
    )
    assert result.returncode == 0 and out.read_text() == ""
    model_dir = tmp_path / "orm_model"
    result = run_script(
        "train_evaluator.py",
        "--init",
        str(policy_dir),
        "--data",
        str(out),
        "--stats",
        str(stats),
        "--out",
        str(model_dir),
        params={"train": TRAIN, "label_tokens": "all"},
    )
    assert result.returncode != 0
    message = last_line(result)
    assert str(out) in message and str(stats) in message, message
    assert "1 have no correct sample" in message and "sampling.num_samples.train" in message, message
    assert not model_dir.exists()


def test_reference_solutions_give_a_question_without_a_correct_sample_its_positive(tmp_path):
    """evaluators.orm.reference_solutions: the human-written solution joins as a correct sample."""
    questions = [{**q, "steps": [f"{i} + 1 = {i + 1}."], "answer": str(i + 1)} for i, q in enumerate(QUESTIONS[:2])]
    graded = [sample("q1", 0, solution("5"), False), sample("q1", 1, solution("6"), False)]
    out, stats = tmp_path / "orm.jsonl", tmp_path / "stats.json"
    result = run_script(
        "orm_data.py",
        "--graded",
        str(write_jsonl(tmp_path / "graded.jsonl", graded)),
        "--questions",
        str(write_jsonl(tmp_path / "questions.jsonl", questions)),
        "--out",
        str(out),
        "--stats",
        str(stats),
        params={**ORM, "reference_solutions": True},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(stats.read_text())
    assert counts["reference_solutions"] == 2
    # q0 has only its reference (no negative): dropped; q1 keeps its reference and both wrong samples
    assert counts["balancing"]["dropped_all_correct"] == 1 and counts["balancing"]["questions_kept"] == 1
    examples = [json.loads(line) for line in out.read_text().splitlines()]
    positives = [e for e in examples if e["labels"][0] == 1.0]
    assert len(examples) == 3 and positives[0]["steps"] == ["1 + 1 = 2."] and positives[0]["answer"] == "2"


def test_examples_that_do_not_fit_are_a_different_error(policy_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "orm.jsonl",
        [
            {
                "unique_id": "q0",
                "problem": "word " * 400,
                "steps": ["a"],
                "answer": "1",
                "labels": [1.0, 1.0],
                "kind": "orm",
            }
        ],
    )
    result = run_script(
        "train_evaluator.py",
        "--init",
        str(policy_dir),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "model"),
        params={"train": TRAIN, "label_tokens": "all"},
    )
    assert result.returncode != 0
    assert "none of its 1 training examples fits in max_length 256" in last_line(result)


# --- samples without steps or without an answer: counted, never a crash --------------------------------------


MALFORMED = {
    "no steps": "\n# Answer\n\n# Expected Answer: 2",  # what SmolLM2 wrote: an answer section, no step
    "no answer": "We add one and get 2.",
    "empty": "",
    "unfinished": "We add one",
}


def test_rest_em_counts_malformed_samples_and_an_empty_round_says_why(policy_dir, tmp_path):
    questions = write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    graded = [sample("q0", i, text, True) for i, text in enumerate(MALFORMED.values())]
    graded[-1]["finished"] = False
    scores = write_jsonl(tmp_path / "scores.jsonl", scores_for(graded))
    out, stats = tmp_path / "kept.jsonl", tmp_path / "stats.json"
    params = {
        "easy_levels": [1, 2, 3],
        "selection": {"aggregation": "min", "easy_filter": "answer", "hard_filter": "top_k"},
    }
    result = run_script(
        "rl_data.py",
        "--algorithm",
        "rest_em",
        "--graded",
        str(write_jsonl(tmp_path / "g.jsonl", graded)),
        "--scores",
        str(scores),
        "--questions",
        str(questions),
        "--out",
        str(out),
        "--stats",
        str(stats),
        params=params,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(stats.read_text())
    assert (
        counts["no_steps_skipped"],
        counts["no_answer_skipped"],
        counts["empty_solutions"],
        counts["unfinished_skipped"],
    ) == (1, 1, 1, 1)
    assert out.read_text() == ""

    model_dir = tmp_path / "rest_em_r1"
    result = run_script(
        "sft.py",
        "--base",
        str(policy_dir),
        "--data",
        str(out),
        "--stats",
        str(stats),
        "--out",
        str(model_dir),
        params={"train": TRAIN},
    )
    assert result.returncode != 0
    message = last_line(result)
    assert "no solution passed the ReST-EM filter" in message and "1 without steps" in message, message
    assert str(stats) in message and not model_dir.exists()


def test_orm_and_dpo_data_never_crash_on_malformed_samples(tmp_path):
    questions = write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    graded = [sample("q0", i, text, i % 2 == 0) for i, text in enumerate([*MALFORMED.values(), solution("2")])]
    graded_path = write_jsonl(tmp_path / "g.jsonl", graded)
    result = run_script(
        "orm_data.py",
        "--graded",
        str(graded_path),
        "--questions",
        str(questions),
        "--out",
        str(tmp_path / "orm.jsonl"),
        "--stats",
        str(tmp_path / "orm.json"),
        params=ORM,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "orm.json").read_text())["balancing"]["unscorable_dropped"] == 1  # the empty one
    result = run_script(
        "rl_data.py",
        "--algorithm",
        "dpo",
        "--graded",
        str(graded_path),
        "--scores",
        str(write_jsonl(tmp_path / "s.jsonl", scores_for(graded))),
        "--questions",
        str(questions),
        "--out",
        str(tmp_path / "pairs.jsonl"),
        "--stats",
        str(tmp_path / "dpo.json"),
        params={
            "easy_levels": [1, 2, 3],
            "selection": {"aggregation": "min", "easy_use_answers": True, "min_margin": 0.0},
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads((tmp_path / "dpo.json").read_text())
    assert counts["empty_solutions"] == 1 and counts["pairs"] == 1  # a correct one against an incorrect one

    # Only cut-off and answerless solutions: nothing can be the chosen side, and the stats say so.
    partial = [
        sample(uid, i, text, None, level=4)
        for uid in ("q3", "q4")
        for i, text in enumerate([MALFORMED["no answer"], "We add"])
    ]
    for row in partial[1::2]:
        row["finished"] = False
    result = run_script(
        "rl_data.py",
        "--algorithm",
        "dpo",
        "--graded",
        str(write_jsonl(tmp_path / "p.jsonl", partial)),
        "--scores",
        str(write_jsonl(tmp_path / "ps.jsonl", scores_for(partial))),
        "--questions",
        str(questions),
        "--out",
        str(tmp_path / "none.jsonl"),
        "--stats",
        str(tmp_path / "none.json"),
        params={"easy_levels": [1, 2, 3], "selection": {"aggregation": "min", "min_margin": 0.0}},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 have no whole solution" in json.loads((tmp_path / "none.json").read_text())["empty_because"]


# --- DPO: no pair above the margin names the margin and the observed spread -------------------------------


def test_dpo_without_a_pair_above_the_margin_names_the_margin_and_the_spread(policy_dir, tmp_path):
    questions = write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    # Hard questions (no gold): the evaluator's scores decide, and a collapsed PRM scores everything ~1e-5.
    graded = [sample(uid, i, solution(str(i)), None, level=4) for uid in ("q3", "q4") for i in range(3)]
    collapsed = scores_for(graded, lambda s: 1e-5 * (1 + s["sample_index"]))
    out, stats = tmp_path / "pairs.jsonl", tmp_path / "stats.json"
    result = run_script(
        "rl_data.py",
        "--algorithm",
        "dpo",
        "--graded",
        str(write_jsonl(tmp_path / "g.jsonl", graded)),
        "--scores",
        str(write_jsonl(tmp_path / "s.jsonl", collapsed)),
        "--questions",
        str(questions),
        "--out",
        str(out),
        "--stats",
        str(stats),
        params={"easy_levels": [1, 2, 3], "selection": {"aggregation": "min", "min_margin": 0.05}},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(stats.read_text())
    assert counts["pairs"] == 0 and counts["pairs_below_margin"] == 2
    assert counts["score_gap"]["max"] == pytest.approx(2e-5)

    model_dir = tmp_path / "dpo_r1"
    result = run_script(
        "train_dpo.py",
        "--policy",
        str(policy_dir),
        "--pairs",
        str(out),
        "--stats",
        str(stats),
        "--out",
        str(model_dir),
        params={"train": {**TRAIN, "packing": False}, "dpo": {}},
    )
    assert result.returncode != 0
    message = last_line(result)
    assert "rl.dpo.min_margin = 0.05" in message and "largest gap is 2e-05" in message, message
    assert "[1e-05, 3e-05]" in message and "collapsed" in message and not model_dir.exists()


# --- AUC without both classes: the report says why ----------------------------------------------------------


def test_evaluator_report_says_why_an_auc_is_undefined(tmp_path):
    rows, scores = [], []
    for uid, level, correct in [
        ("e1", 1, [True, False]),
        ("e2", 2, [True, True]),
        ("h1", 4, [False, False]),
        ("h2", 5, [False, False]),
    ]:
        for index, right in enumerate(correct):
            rows.append(
                {
                    "unique_id": uid,
                    "level": level,
                    "subject": "Algebra",
                    "sample_index": index,
                    "answer": str(int(right)),
                    "answer_cluster": int(right),
                    "correct": right,
                    "finished": True,
                }
            )
            scores.append({"unique_id": uid, "sample_index": index, "step_scores": [0.2 + 0.5 * right]})
    out_md = tmp_path / "evaluators.md"
    result = run_script(
        "evaluator_report.py",
        "--eval",
        str(write_jsonl(tmp_path / "eval.jsonl", rows)),
        "--scores",
        f"prm={write_jsonl(tmp_path / 'scores.jsonl', scores)}",
        "--out-csv",
        str(tmp_path / "evaluators.csv"),
        "--out-md",
        str(out_md),
        params={"easy_levels": [1, 2, 3], "aggregation": {"prm": "min"}},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = out_md.read_text()
    assert "AUC on hard problems is undefined (–): no validation sample is correct (0 of 4)" in text
    assert "AUC on easy problems is undefined" not in text


# --- PPO: a round where every rollout earns the same reward runs, and says so --------------------------------


def test_a_ppo_round_without_reward_signal_runs_and_counts_it(policy_dir, synthetic_split, tmp_path):
    from easy2hard import evaluator

    rows, _ = synthetic_split
    easy = write_jsonl(
        tmp_path / "easy.jsonl",
        [{k: r[k] for k in ("unique_id", "problem", "level", "answer")} for r in rows[:8] if r["level"] <= 3],
    )
    hard = write_jsonl(
        tmp_path / "hard.jsonl",
        [{k: r[k] for k in ("unique_id", "problem", "level")} for r in rows[:8] if r["level"] > 3],
    )
    value_dir = tmp_path / "value"
    model, tokenizer = evaluator.load_backbone(str(policy_dir))
    model.save_pretrained(value_dir)
    tokenizer.save_pretrained(value_dir)
    train = {**TRAIN, "global_batch_size": 4, "micro_batch_size": 4, "lr_scheduler": "constant", "warmup_ratio": 0.0}
    params = {
        # No evaluator reward, no outcome reward, no stop penalty, no KL: every rollout earns 0.
        "ppo": {
            "steps": 2,
            "prompts_per_step": 4,
            "ppo_epochs": 1,
            "process_weight": 0.0,
            "outcome_reward": 0.0,
            "no_answer_penalty": 0.0,
            "kl_coef": 0.0,
            "aggregation": "min",
        },
        "policy_train": train,
        "value_train": train,
        "sampling": {
            "num_samples": 1,
            "temperature": 1.0,
            "top_k": 20,
            "top_p": 1.0,
            "max_new_tokens": 16,
            "batch_size": 16,
            "seed": 0,
            "engine": "hf",
        },
        "grading": {"mode": "lenient", "timeout": 5.0, "workers": 1},
        "score_batch_size": 8,
    }
    out = tmp_path / "ppo_r1"
    result = run_script(
        "train_ppo.py",
        "--policy",
        str(policy_dir),
        "--value",
        str(value_dir),
        "--reference",
        str(policy_dir),
        "--reward-model",
        str(value_dir),
        "--train-easy",
        str(easy),
        "--train-hard",
        str(hard),
        "--out",
        str(out),
        "--value-out",
        str(tmp_path / "value_out"),
        "--snapshots",
        str(tmp_path / "snapshots"),
        params=params,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 PPO steps (2 without reward signal" in result.stdout
    assert result.stderr.count("no reward signal") == 2
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps_without_reward_signal"] == 2
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(record["same_reward_for_all"] and record["reward"] == 0.0 for record in history)


def test_empty_data_message_without_a_stats_file(tmp_path):
    assert training.empty_data_message("x.jsonl", None) == "x.jsonl: no training examples: the file is empty"
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"empty_because": "nothing passed"}))
    assert training.empty_data_message("x.jsonl", str(stats)) == (
        f"x.jsonl: no training examples: nothing passed (counts in {stats})"
    )
