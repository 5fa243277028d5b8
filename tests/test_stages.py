"""The stage -> config keys table (workflow/easy2hard/stages.py): every config key reaches a stage or
shapes the DAG, every table entry is a rule, and the params a planned job receives are the table's."""

from __future__ import annotations

import re

import pytest
import yaml
from test_presets import arguments_after, planned_commands

from conftest import REPO_ROOT
from easy2hard import stages

DEFAULTS = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
# Rules that are another rule with other inputs or outputs: they receive what their parent receives.
VARIANTS = {
    "grade_train_full": "grade_train",
    "evaluate_greedy": "evaluate",
    "orm_data_full": "orm_data",
    "oprm_data_full": "oprm_data",
}


def leaf_keys(section: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in section.items():
        path = f"{prefix}{key}"
        keys += leaf_keys(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return keys


def rule_names() -> set[str]:
    text = "\n".join(path.read_text() for path in (REPO_ROOT / "rules").glob("*.smk"))
    return set(re.findall(r"^rule (\w+):", text, flags=re.M)) | set(
        re.findall(r"^use rule \w+ as (\w+)", text, flags=re.M)
    )


def test_every_config_key_reaches_a_stage_or_shapes_the_dag():
    """A key no stage receives and no rule reads would be a setting that does nothing."""

    def shapes_dag(key):
        return any(key == k or key.startswith(f"{k}.") for k in stages.DAG_KEYS)

    orphans = [
        key
        for key in leaf_keys(DEFAULTS)
        if not shapes_dag(key) and not [s for s in stages.reruns(key) if s != "provenance"]
    ]
    assert orphans == []


def test_every_stage_is_a_rule_and_resolves_on_every_preset():
    assert set(stages.STAGE_PARAMS) <= rule_names()
    for preset in [None, *sorted((REPO_ROOT / "configs").glob("*.yaml"))]:
        config = DEFAULTS if preset is None else merged(DEFAULTS, yaml.safe_load(preset.read_text()))
        for stage in stages.STAGE_PARAMS:
            stages.params(config, stage, split="test", kind="prm")  # a KeyError names the missing field


def merged(base: dict, override: dict) -> dict:
    """Snakemake's --configfile merge: nested sections update key by key."""
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return result


def test_params_are_copies_with_dropped_and_kept_keys():
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    greedy = stages.params(config, "sample_greedy", split="test")
    assert set(greedy["sampling"]) == {"max_new_tokens", "batch_size", "engine", "vllm"}
    assert greedy["sampling"]["vllm"]["tensor_parallel_size"] == config["compute"]["inference_gpus"]
    assert "tensor_parallel_size" not in config["sampling"]["vllm"]  # nesting wrote into a copy
    sample = stages.params(config, "sample", split="train")
    assert sample["sampling"]["num_samples"] == config["sampling"]["num_samples"]["train"]
    assert stages.params(config, "prm_data_full")["easy_levels"] == [1, 2, 3, 4, 5]
    assert "prm800k" not in stages.params(config, "prepare_data")
    assert "threads" not in stages.params(config, "provenance") and "rl" in stages.params(config, "provenance")
    config["evaluators"]["orm"]["train"] = {"learning_rate": 1.0}
    assert stages.params(config, "train_evaluator", kind="orm")["train"]["learning_rate"] == 1.0
    assert stages.params(config, "train_evaluator", kind="prm")["train"] == config["evaluators"]["train"]
    with pytest.raises(KeyError, match="rl.dpo.beta"):
        del config["rl"]["dpo"]["beta"]
        stages.params(config, "dpo")


def test_reruns_names_the_stages_a_key_change_re_runs():
    assert stages.reruns("rl.dpo.beta") == ["dpo", "provenance"]
    assert "dpo_pairs" in stages.reruns("rl.dpo.min_margin") and "dpo" not in stages.reruns("rl.dpo.min_margin")
    temperature = stages.reruns("sampling.temperature")
    assert "sample" in temperature and "sample_greedy" not in temperature and "ppo" in temperature
    assert "sample_greedy" in stages.reruns("sampling.max_new_tokens")
    assert "prm_data" not in stages.reruns("sampling.num_samples.test")
    assert stages.reruns("data.prm800k.files") == ["provenance"]  # an input, not a param
    assert stages.reruns("threads.sft") == []
    assert "train_evaluator" in stages.reruns("evaluators.orm.train.learning_rate")
    assert "orm_data" not in stages.reruns("evaluators.orm.train.learning_rate")


def test_planned_jobs_receive_the_tables_params():
    """The rules pass exactly the table's params (through common.smk's stage_params)."""
    oracles = REPO_ROOT / "tests" / "configs" / "all_oracles.yaml"  # every variant rule planned
    jobs = planned_commands(oracles)
    config = merged(DEFAULTS, yaml.safe_load(oracles.read_text()))
    checked = 0
    for rule, rule_jobs in jobs.items():
        stage = VARIANTS.get(rule, rule)
        if stage not in stages.STAGE_PARAMS:
            assert all("--params" not in job["args"] for job in rule_jobs), rule
            continue
        for job in rule_jobs:
            out = arguments_after(job, "--out")[0] if "--out" in job["args"] else ""
            split = re.search(r"(train|valid|test)(\.greedy)?\.jsonl$", out)
            kind = out.split("/")[2].removesuffix("_full") if rule == "train_evaluator" else None
            expected = stages.params(config, stage, split=split.group(1) if split else None, kind=kind)
            assert job["params"] == expected, rule
            checked += 1
    assert checked > 50
