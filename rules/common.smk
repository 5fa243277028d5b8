# Helpers shared by every rule: config validation, script paths, the config slice each rule
# receives (as JSON, so a change to a stage's parameters re-runs that stage and its dependents).

import json
import sys
from pathlib import Path

# The package is importable straight from the checkout (no install needed, e.g. in conda envs).
PACKAGE_ROOT = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_ROOT))

from easy2hard.config import validate_config

validate_config(config, source="config (config.yaml + --configfile/--config overrides)")

SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"
GENERATORS = config["report"]["generators"]
SPLITS = ["train", "valid", "test"]
REPORT_FILES = [
    "results/report/metrics.csv",
    "results/report/report.md",
    "results/report/accuracy_vs_n.png",
]
DATASET_NAME = {
    "synthetic": "synthetic arithmetic",
    "math_jsonl": "MATH",
    "huggingface": config["data"]["huggingface"]["test_name"] if "huggingface" in config["data"] else "",
}[config["data"]["source"]]


wildcard_constraints:
    generator="[A-Za-z0-9_]+",
    split="train|valid|test",


def script(name):
    """The command that runs one of the stage scripts, with the package on PYTHONPATH."""
    return f"PYTHONPATH={PACKAGE_ROOT}${{PYTHONPATH:+:$PYTHONPATH}} python {SCRIPTS / name}"


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def source_files(wildcards):
    """Local data files are inputs, so editing them re-runs the split and everything after it."""
    if config["data"]["source"] == "math_jsonl":
        return [config["data"]["math_jsonl"]["train"], config["data"]["math_jsonl"]["test"]]
    return []


def questions_for(split):
    """Question files to sample for a split; train = easy and hard train questions."""
    if split == "train":
        return ["results/data/train_easy.jsonl", "results/data/train_hard.jsonl"]
    return [f"results/data/{split}.jsonl"]


def sampling_params(wildcards):
    """The sampling config with the number of samples of this split."""
    cfg = {k: v for k, v in config["sampling"].items() if k != "num_samples"}
    return as_json({**cfg, "num_samples": config["sampling"]["num_samples"][wildcards.split]})
