"""Config validation against workflow/schemas/config.schema.yaml, with errors that name the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# The policy name suffix of a PPO checkpoint chosen with hard validation gold (rl.ppo.checkpoint_selection).
GOLD_SELECTED_SUFFIX = "_gold_selected"


class ConfigError(ValueError):
    pass


def from_dict(cls, options: dict, section: str):
    """A config dataclass (TrainConfig, RestEmConfig, ...) from its config section; an unknown key
    is an error that names the section and the key."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown {section} option(s): {', '.join(unknown)}")
    return cls(**options)


def validate_config(config: dict, source: str = "config", schema_path: Path = SCHEMA) -> dict:
    """Raise ConfigError listing every problem as `<source>: field 'a.b': message`."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        path = [str(part) for part in error.absolute_path]
        if error.validator == "additionalProperties":
            # Name each unknown key by its full dotted path, like every other error.
            known = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - known):
                problems.append(f"{source}: field '{'.'.join(path + [key])}': unknown key")
            continue
        problems.append(f"{source}: field '{'.'.join(path) or '(top level)'}': {error.message}")
    problems += _semantic_problems(config, source)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def _semantic_problems(config: dict, source: str) -> list[str]:
    """Constraints a schema cannot state."""
    problems = []
    model = config.get("model", {})
    if model.get("source") == "pretrained" and not model.get("name_or_path"):
        problems.append(f"{source}: field 'model.name_or_path': required when model.source is 'pretrained'")
    if model.get("source") == "tiny" and "tiny" not in model:
        problems.append(f"{source}: field 'model.tiny': required when model.source is 'tiny'")
    data = config.get("data", {})
    if isinstance(data.get("source"), str) and data["source"] not in data:
        problems.append(f"{source}: field 'data.{data['source']}': required when data.source is '{data['source']}'")
    prm = config.get("evaluators", {}).get("prm", {})
    if isinstance(prm, dict) and prm.get("source") == "labeller" and data.get("source") != "synthetic":
        problems.append(
            f"{source}: field 'evaluators.prm.source': 'labeller' checks synthetic arithmetic steps; "
            f"data.source is {data.get('source')!r} (use auto or prm800k)"
        )
    ppo = config.get("rl", {}).get("ppo", {})
    if isinstance(ppo, dict) and ppo.get("checkpoint_selection") == "hard_valid_gold" and not ppo.get("snapshot_every"):
        problems.append(
            f"{source}: field 'rl.ppo.snapshot_every': must be > 0 when checkpoint_selection is "
            "'hard_valid_gold' (without snapshots there is nothing to choose from)"
        )
    sft = config.get("sft", {})
    if isinstance(sft, dict) and all(isinstance(sft.get(k), int) for k in ("global_batch_size", "micro_batch_size")):
        if sft["micro_batch_size"] > 0 and sft["global_batch_size"] % sft["micro_batch_size"]:
            problems.append(f"{source}: field 'sft.global_batch_size': must be a multiple of sft.micro_batch_size")
    return problems
