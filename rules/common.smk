# Helpers shared by every rule: config validation, script paths, the config slice each rule
# receives (as JSON, so a change to a stage's parameters re-runs that stage and its dependents).

import json
from pathlib import Path

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


wildcard_constraints:
    generator="[A-Za-z0-9_]+",
    split="train|valid|test",


def script(name):
    """The command that runs one of the stage scripts with this Python."""
    return f"python {SCRIPTS / name}"


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def questions_for(split):
    """Question files to sample for a split; train = easy and hard train questions."""
    if split == "train":
        return ["results/data/train_easy.jsonl", "results/data/train_hard.jsonl"]
    return [f"results/data/{split}.jsonl"]
