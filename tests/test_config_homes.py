"""Every default has one home, the config dataclass, and config.yaml documents it (as TRL does).

For each config section a dataclass backs, config.yaml lists every field of the dataclass with
exactly the dataclass's default: changing one side only fails here. The few names that are not
on both sides (or come from another section) are listed per section, each with its reason.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from easy2hard import dpo, evaluator, ppo, rest_em, sampling, training, vllm_backend

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


@dataclasses.dataclass(frozen=True)
class Home:
    path: str  # dotted path of the config section
    cls: type  # the dataclass whose defaults it lists
    exceptions: dict = dataclasses.field(default_factory=dict)  # name on one side only (or not comparable) -> why
    elsewhere: dict = dataclasses.field(default_factory=dict)  # field -> the config path the rules fill it from


OWN_ROW = "a section of its own, with its own row in this table"
RL_AGGREGATION = {"aggregation": "rl.aggregation"}  # the rules pass the RL step aggregation in

HOMES = [
    Home("sft", training.TrainConfig, {"source": "which examples SFT trains on: read by the rules, not the loop"}),
    Home("evaluators.train", evaluator.EvaluatorTrainConfig),
    Home("rl.rest_em.train", rest_em.RestEmTrainConfig),
    Home("rl.dpo.train", dpo.DPOTrainConfig),
    Home("rl.ppo.policy_train", ppo.PPOPolicyTrainConfig),
    Home("rl.ppo.value_train", ppo.PPOValueTrainConfig),
    Home(
        "sampling",
        sampling.SamplingConfig,
        {
            "num_samples": "config.yaml: a count per split; the rules pass the sampled split's count",
            "greedy": "not a config key: the greedy-decoding rules pass --greedy",
            "vllm": OWN_ROW,
            "shard_questions": "config key only: sample.py hands it to sample_in_shards, not to the sampler",
        },
    ),
    Home(
        "sampling.vllm",
        vllm_backend.VLLMOptions,
        {
            "tensor_parallel_size": "not a sampling.vllm key: the rules fill it from compute.inference_gpus",
        },
    ),
    Home("rl.rest_em.filter", rest_em.RestEmConfig, elsewhere=RL_AGGREGATION),
    Home(
        "rl.dpo",
        dpo.DPOConfig,
        {
            "rounds": "config key only: the number of rounds the rules chain",
            "train": OWN_ROW,
        },
        elsewhere=RL_AGGREGATION,
    ),
    Home(
        "rl.ppo",
        ppo.PPOConfig,
        {
            "rounds": "config key only: the number of rounds the rules chain",
            "policy_train": OWN_ROW,
            "value_train": OWN_ROW,
            "checkpoint_selection": "config key only: the rules decide which policy the report reads",
        },
        elsewhere=RL_AGGREGATION,
    ),
]


def section(path: str, config: dict = CONFIG):
    for key in path.split("."):
        config = config[key]
    return config


def default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def same(a, b) -> bool:
    """Equal, and a bool only equals a bool (True == 1 in Python)."""
    return (isinstance(a, bool) == isinstance(b, bool)) and a == b


@pytest.mark.parametrize("home", HOMES, ids=[home.path for home in HOMES])
def test_config_yaml_lists_every_dataclass_default(home):
    options = section(home.path)
    fields = {field.name: default(field) for field in dataclasses.fields(home.cls)}
    for name in home.exceptions:  # no stale entries
        assert name in fields or name in options, f"{home.path}: exception {name!r} is on neither side"
    problems = []
    for name, value in fields.items():
        if name in home.exceptions:
            continue
        if value is dataclasses.MISSING:
            problems.append(f"{home.cls.__name__}.{name} has no default")
            continue
        where = home.elsewhere.get(name, f"{home.path}.{name}")
        parent, _, key = where.rpartition(".")
        container = section(parent) if parent else CONFIG
        if key not in container:
            problems.append(f"{where}: missing from config.yaml ({home.cls.__name__}.{name} = {value!r})")
        elif not same(container[key], value):
            problems.append(f"{where}: config.yaml {container[key]!r} != {home.cls.__name__}.{name} = {value!r}")
    for key in options:
        if key not in fields and key not in home.exceptions:
            problems.append(f"{home.path}.{key}: no field of {home.cls.__name__}")
    assert not problems, "\n".join(problems)


def schema_training_sections(schema=SCHEMA, path=()) -> list[str]:
    """Dotted paths of every section the schema types as a full training section ($defs/train)."""
    found = []
    for key, sub in (schema.get("properties") or {}).items():
        if sub.get("$ref") == "#/$defs/train":
            found.append(".".join(path + (key,)))
        elif isinstance(sub, dict):
            found += schema_training_sections(sub, path + (key,))
    return found


TRAIN_HOMES = [home for home in HOMES if issubclass(home.cls, training.TrainConfig)]


def test_every_training_section_has_a_home():
    assert {home.path for home in TRAIN_HOMES} == {"sft", *schema_training_sections()}
    assert len({home.cls for home in TRAIN_HOMES}) == len(TRAIN_HOMES)  # one dataclass per section


@pytest.mark.parametrize("home", TRAIN_HOMES, ids=[home.path for home in TRAIN_HOMES])
def test_training_sections_are_complete(home):
    """The workflow passes every key of a training section: TrainConfig never fills one in silently."""
    options = {k: v for k, v in section(home.path).items() if k not in home.exceptions}
    names = [field.name for field in dataclasses.fields(training.TrainConfig)]
    assert sorted(set(names) - set(options)) == []
    assert [field.name for field in dataclasses.fields(home.cls)] == names  # subclasses change defaults only
    parsed = home.cls.from_dict(options)
    assert type(parsed) is home.cls and parsed == home.cls()
    assert training.TrainConfig.from_dict(options) == training.TrainConfig(**dataclasses.asdict(home.cls()))


def test_the_schema_declares_no_defaults():
    """Types live in the schema, defaults in the dataclasses: a `default:` there would be a third home."""

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "default" and path[-1:] != ("properties",):
                    yield ".".join(path)
                yield from walk(value, path + (key,))
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, path)

    assert list(walk(SCHEMA, ())) == []
