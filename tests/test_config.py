"""Config validation: config.yaml and presets validate; bad values are rejected naming the field."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from easy2hard.config import ConfigError, validate_config

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
PRESETS = sorted((REPO_ROOT / "configs").glob("*.yaml")) + sorted((REPO_ROOT / "configs").glob("*.yml"))


def base():
    return copy.deepcopy(BASE)


def error_for(config, source="config"):
    with pytest.raises(ConfigError) as info:
        validate_config(config, source=source)
    return str(info.value)


def test_config_yaml_validates():
    assert validate_config(base()) == BASE


@pytest.mark.parametrize(
    "preset",
    PRESETS or [pytest.param(None, marks=pytest.mark.skip(reason="configs/ has no preset yet"))],
    ids=[p.name for p in PRESETS] or ["no-presets"],
)
def test_preset_merged_on_config_yaml_validates(preset):
    overrides = yaml.safe_load(preset.read_text()) or {}
    assert isinstance(overrides, dict), f"{preset.name} must be a mapping"
    merged = base()
    update_config(merged, overrides)  # what snakemake --configfile does
    validate_config(merged, source=str(preset))


def test_deep_merge_keeps_sibling_keys():
    merged = base()
    update_config(merged, {"sampling": {"temperature": 0.9}})
    assert merged["sampling"]["temperature"] == 0.9
    assert merged["sampling"]["top_k"] == BASE["sampling"]["top_k"]
    validate_config(merged)


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("sft", "learning_rate"), "fast", "sft.learning_rate"),
        (("sft", "epochs"), 0, "sft.epochs"),
        (("sampling", "top_p"), 1.5, "sampling.top_p"),
        (("sampling", "num_samples", "test"), 0, "sampling.num_samples.test"),
        (("data", "source"), "kaggle", "data.source"),
        (("data", "valid_size"), -1, "data.valid_size"),
        (("data", "easy_levels"), [], "data.easy_levels"),
        (("data", "easy_levels"), [1, 1], "data.easy_levels"),
        (("data", "easy_levels"), [1, 6], "data.easy_levels.1"),
        (("data", "easy_levels"), [0, 2], "data.easy_levels.0"),
        (("data", "easy_levels"), "1,2,3", "data.easy_levels"),
        (("report", "generators"), ["sft/../x"], "report.generators.0"),
        (("threads", "sft"), 0, "threads.sft"),
        (("grading", "workers"), 1.5, "grading.workers"),
        (("sampling", "shard_questions"), 0, "sampling.shard_questions"),
        (("rl", "evaluator"), "gold", "rl.evaluator"),
        (("rl", "dpo", "beta"), "0.1", "rl.dpo.beta"),
        (("rl", "dpo", "label_smoothing"), 0.5, "rl.dpo.label_smoothing"),
        (("rl", "rest_em", "filter", "hard_filter"), "answer", "rl.rest_em.filter.hard_filter"),
        (("rl", "ppo", "rounds"), -1, "rl.ppo.rounds"),
        (("rl", "ppo", "policy_train", "learning_rate"), 0, "rl.ppo.policy_train.learning_rate"),
    ],
)
def test_bad_value_names_the_field(path, value, field):
    config = base()
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    message = error_for(config)
    assert f"field '{field}'" in message


@pytest.mark.parametrize("path", [("thrads",), ("sampling", "temprature"), ("rl", "ppo", "kl_coeff")])
def test_unknown_key_is_named_with_its_dotted_path(path):
    config = base()
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 1
    assert f"field '{'.'.join(path)}'" in error_for(config)


def test_missing_required_key_is_reported():
    config = base()
    del config["sampling"]["seed"]
    message = error_for(config)
    assert "field 'sampling'" in message and "'seed'" in message


@pytest.mark.parametrize("name_or_path", [None, ""])
def test_pretrained_needs_name_or_path(name_or_path):
    config = base()
    config["model"].update(source="pretrained", name_or_path=name_or_path)
    assert "field 'model.name_or_path'" in error_for(config)


def test_pretrained_with_name_or_path_validates():
    config = base()
    config["model"].update(source="pretrained", name_or_path="some-org/some-model")
    validate_config(config)


def test_tiny_needs_its_shape():
    config = base()
    del config["model"]["tiny"]
    assert "field 'model.tiny'" in error_for(config)


@pytest.mark.parametrize("source", ["synthetic", "math_jsonl", "huggingface"])
def test_data_source_needs_its_section(source):
    config = base()
    config["data"]["source"] = source
    config["evaluators"]["prm"]["source"] = "auto"  # the default labeller checks synthetic problems only
    validate_config(copy.deepcopy(config))
    del config["data"][source]
    assert f"field 'data.{source}'" in error_for(config)


@pytest.mark.parametrize(
    "global_batch, micro_batch, ok", [(20, 8, False), (16, 32, False), (32, 8, True), (7, 7, True)]
)
def test_global_batch_must_be_a_multiple_of_micro_batch(global_batch, micro_batch, ok):
    config = base()
    config["sft"].update(global_batch_size=global_batch, micro_batch_size=micro_batch)
    if ok:
        validate_config(config)
    else:
        assert "field 'sft.global_batch_size'" in error_for(config)


def test_zero_micro_batch_is_a_config_error():
    config = base()
    config["sft"]["micro_batch_size"] = 0
    assert "field 'sft.micro_batch_size'" in error_for(config)


def test_every_problem_is_listed_with_the_source():
    config = base()
    config["threads"]["per_job"] = 0
    config["sft"]["learning_rate"] = "fast"
    message = error_for(config, source="configs/mine.yaml")
    assert "configs/mine.yaml: field 'threads.per_job'" in message
    assert "configs/mine.yaml: field 'sft.learning_rate'" in message


def test_snakemake_refuses_a_bad_config():
    # The interpreter running the tests, not whatever `snakemake` is on PATH (a venv's bin/ need not be).
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "threads=0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "field 'threads'" in output
    assert "ConfigError" in output


def test_the_step_labeller_needs_synthetic_data():
    config = base()
    config["evaluators"]["prm"]["source"] = "labeller"
    assert validate_config(config)
    config["data"]["source"] = "math_jsonl"
    assert "field 'evaluators.prm.source': 'labeller' checks synthetic arithmetic steps" in error_for(config)


def test_synthetic_train_counts_per_level_validate():
    config = base()
    config["data"]["synthetic"].update(num_train=[1000, 1000, 1000, 250, 250], max_value=20)
    assert validate_config(config)
    config["data"]["synthetic"]["num_train"] = [1000, 1000]
    assert "field 'data.synthetic.num_train'" in error_for(config)


def test_gold_selection_needs_snapshots():
    config = base()
    config["rl"]["ppo"]["checkpoint_selection"] = "hard_valid_gold"
    assert "rl.ppo.snapshot_every" in error_for(config)
    config["rl"]["ppo"]["snapshot_every"] = 4
    validate_config(config)
