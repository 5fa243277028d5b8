"""The paper presets reach the stages with the paper's recipe: Table 4 and the authors' settings are
read back from the config slice each rule receives (the `--params` of its planned shell command)."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml
from test_workflow import PRM800K_SAMPLES, snakemake

from conftest import MATH_DIR, PRM800K_EXAMPLES_DIR, REPO_ROOT

PAPER_7B = REPO_ROOT / "configs" / "paper-llemma7b.yaml"
SAMPLE_FILES = ["phase1_train.sample.jsonl", "phase2.sample.jsonl"]
SAMPLE_PATHS = yaml.safe_load(PRM800K_SAMPLES.read_text())["data"]["prm800k"]["files"]


def planned_commands(*configfiles) -> dict[str, list[dict]]:
    """rule -> [{"params": the JSON config slice, "args": the command's arguments, "input": [...]}]
    for every job of a forced dry run."""
    result = snakemake("-n", "--forceall", "-p", "--cores", "1", "--configfile", *map(str, configfiles))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        header = re.match(r"(?:local)?rule (\w+):", block)
        command = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        if not header or not command:
            continue
        words = shlex.split(command.group(1).split(" > ")[0])
        inputs = re.search(r"^\s+input: (.*)$", block, flags=re.M)
        jobs.setdefault(header.group(1), []).append(
            {
                "params": json.loads(words[words.index("--params") + 1]) if "--params" in words else {},
                "args": words,
                "input": inputs.group(1).split(", ") if inputs else [],
            }
        )
    return jobs


@pytest.fixture(scope="module")
def paper_7b():
    """The 7b preset, with PRM800K pointed at the sample records (the release is not shipped)."""
    if not (MATH_DIR / "train.jsonl").exists() or not all((PRM800K_EXAMPLES_DIR / f).exists() for f in SAMPLE_FILES):
        pytest.skip("the MATH files or the PRM800K sample records are not under ../shared/data")
    return planned_commands(PAPER_7B, PRM800K_SAMPLES)


def only(jobs, rule):
    assert len(jobs[rule]) == 1, f"{rule}: {len(jobs[rule])} jobs"
    return jobs[rule][0]


def arguments_after(job, flag) -> list[str]:
    words = job["args"]
    start = words.index(flag) + 1
    end = next((i for i in range(start, len(words)) if words[i].startswith("--")), len(words))
    return words[start:end]


TABLE_4_SFT = {"learning_rate": 2e-5, "epochs": 3, "global_batch_size": 128, "max_length": 768}
TABLE_4_EVALUATORS = {
    "prm": {"learning_rate": 2e-5, "epochs": 2, "global_batch_size": 128, "max_length": 768},
    "orm": {"learning_rate": 2e-5, "epochs": 2, "global_batch_size": 128, "max_length": 1024},
    "oprm": {"learning_rate": 2e-5, "epochs": 2, "global_batch_size": 128, "max_length": 1024},
}
AUTHORS_PPO = {  # examples/README.md, math_utils/math_rl_utils.py, trainers/ppo_trainer.py
    "reward": "process",
    "running_min_start": 0.5,
    "process_upper_bound": 0.0,
    "total_step_bonus": 0.25,
    "step_bonus": 0.0,
    "answer_process_reward": False,
    "outcome_reward": 1.0,
    "hard_outcome_reward": 0.25,
    "stop_penalty": "graded",
    "no_answer_penalty": -1.0,
    "kl_coef": 0.01,
    "kl_estimator": "k1_clamped",
    "lam": 1.0,
    "gamma": 1.0,
    "whiten_rewards": True,
    "rollout_top_k": 50,
    "prompts_per_step": 512,
    "ppo_epochs": 1,
}


def test_sft_trains_on_prm800k_with_table_4_settings(paper_7b):
    sft = only(paper_7b, "sft")
    assert {k: sft["params"]["train"][k] for k in TABLE_4_SFT} == TABLE_4_SFT
    assert arguments_after(sft, "--prm800k") == SAMPLE_PATHS
    assert sft["params"]["prm800k_levels"] == [1, 2, 3] and "--data" not in sft["args"]
    assert set(arguments_after(sft, "--excluded-questions")) == {
        "results/data/test.jsonl",
        "results/data/valid.jsonl",
        "results/data/train_hard.jsonl",
    }
    # The oracle (Full) SFT reads PRM800K records of every level.
    sft_full = only(paper_7b, "sft_full")
    assert sft_full["params"]["prm800k_levels"] == [1, 2, 3, 4, 5]
    assert "results/data/train_hard.jsonl" not in arguments_after(sft_full, "--excluded-questions")


def test_evaluators_train_from_the_base_model_with_table_4_settings(paper_7b):
    jobs = {arguments_after(job, "--out")[0].split("/")[2]: job for job in paper_7b["train_evaluator"]}
    for kind, expected in TABLE_4_EVALUATORS.items():
        assert {k: jobs[kind]["params"]["train"][k] for k in expected} == expected, kind
        assert arguments_after(jobs[kind], "--init") == ["results/models/base"], kind
        assert jobs[f"{kind}_full"]["params"] == jobs[kind]["params"]  # an oracle trains like its kind
    prm_data = only(paper_7b, "prm_data")
    assert prm_data["params"]["source"] == "prm800k" and "train" not in prm_data["params"]
    assert arguments_after(prm_data, "--prm800k") == SAMPLE_PATHS


def test_ppo_receives_the_authors_reward_and_optimisation_settings(paper_7b):
    ppo = only(paper_7b, "ppo")["params"]
    assert {k: ppo["ppo"][k] for k in AUTHORS_PPO} == AUTHORS_PPO
    assert ppo["policy_train"]["global_batch_size"] == ppo["value_train"]["global_batch_size"] == 64
    assert ppo["sampling"]["temperature"] == 0.7 and ppo["sampling"]["max_new_tokens"] == 768
    ppo_job = only(paper_7b, "ppo")
    assert (
        arguments_after(ppo_job, "--reward-model")
        == arguments_after(ppo_job, "--value")
        == ["results/evaluators/prm/model"]
    )
    assert ppo["ppo"]["steps"] == 11_500 * 50 // 512  # train questions x their 50 epochs // rollout batch
    for model in ("policy_train", "value_train"):
        assert {k: ppo[model][k] for k in ("learning_rate", "lr_scheduler")} == {
            "learning_rate": 2e-5,
            "lr_scheduler": "cosine",
        }


def test_the_preset_runs_every_stage_on_gpus(paper_7b):
    for rule in ("sft", "train_evaluator", "ppo", "rest_em", "dpo"):
        assert "--nproc_per_node=8" in " ".join(paper_7b[rule][0]["args"]), rule


def test_the_smoke_preset_runs_every_stage_on_a_fixed_subset_of_real_math():
    if not (MATH_DIR / "train.jsonl").exists() or not (PRM800K_EXAMPLES_DIR / SAMPLE_FILES[0]).exists():
        pytest.skip("the MATH files or the PRM800K sample records are not under ../shared/data")
    jobs = planned_commands(REPO_ROOT / "configs" / "smollm2-smoke.yaml")
    for rule in (
        "base_model",
        "sft",
        "sample",
        "prm_data",
        "orm_data",
        "oprm_data",
        "rest_em",
        "dpo",
        "ppo",
        "evaluator_report",
        "rl_report",
        "report",
    ):
        assert rule in jobs, rule
    assert sorted(arguments_after(job, "--out")[0] for job in jobs["train_evaluator"]) == [
        f"results/evaluators/{kind}/model" for kind in ("oprm", "orm", "prm")
    ]
    subset = only(jobs, "prepare_data")["params"]["subset"]
    assert subset == {"train_per_level": [6, 6, 6, 3, 3], "test_per_level": [2, 2, 2, 2, 2], "seed": 0}
    assert only(jobs, "prm_data")["params"]["source"] == "prm800k"
    # Pretrained-scale learning rates everywhere (the offline default's collapse a pretrained PRM).
    assert max(job["params"]["train"]["learning_rate"] for job in jobs["train_evaluator"]) <= 1e-5
    assert only(jobs, "sft")["params"]["train"]["learning_rate"] == 5e-5
    # What made it finish: ORM positives without a solved problem, bf16 on CPU, capped scoring batches.
    assert only(jobs, "orm_data")["params"]["reference_solutions"] is True
    assert all(job["params"]["max_tokens"] == 4096 for job in jobs["score"])
    assert all(
        job["args"][0] == "EASY2HARD_CPU_BF16=1" for rule in ("sft", "sample", "score", "ppo") for job in jobs[rule]
    )
