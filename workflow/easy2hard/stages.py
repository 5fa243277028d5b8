"""The config keys each stage receives: one table, stage -> {param: config key}.

Every rule hands its stage these params as one JSON argument (`--params`), and Snakemake re-runs
a job whose params changed: the table says which stages a config key re-runs (`reruns`, or
`python -m easy2hard.stages rl.dpo.beta`). The keys no stage receives shape the DAG instead (which
jobs exist, their inputs and resources): `DAG_KEYS`, which tests/test_stages.py keeps complete.

A table entry maps a param name to a config key (a dotted path) or to a literal value (the
oracles' levels). A dotted param name nests (`ppo.aggregation`); `*` spreads a section's keys into
the params; a list of keys merges their sections, later ones over earlier ones. After a key, `-name`
drops and `+name` keeps only that key of the section; `{split}` and `{kind}` are filled from the
job's wildcards.
"""

from __future__ import annotations

import copy
import sys

from easy2hard.metrics import LEVELS

ALL_LEVELS = list(LEVELS)
SPREAD = "*"

# What in-process samplers receive (rollouts, PPO, checkpoint selection): no per-split N, no
# output shards; vLLM splits a model over the job's GPUs.
_SAMPLER = {
    "sampling": "sampling -num_samples -shard_questions",
    "sampling.vllm.tensor_parallel_size": "compute.inference_gpus",
}
_SAMPLE = {
    **_SAMPLER,
    "sampling.num_samples": "sampling.num_samples.{split}",
    "shard_questions": "sampling.shard_questions",
}
# Greedy decoding depends on these only: changing the temperature or N does not re-run it.
_GREEDY = {
    "sampling": "sampling +max_new_tokens +batch_size +engine +vllm",
    "sampling.vllm.tensor_parallel_size": "compute.inference_gpus",
    "shard_questions": "sampling.shard_questions",
}
_ICL = {"icl": "icl +k +seed"}
_PRM_DATA = {SPREAD: "evaluators.prm -train", "grading": "grading", **_SAMPLER}
_SELECTION = {"selection.aggregation": "rl.aggregation", "easy_levels": "data.easy_levels"}

STAGE_PARAMS: dict[str, dict[str, object]] = {
    "prepare_data": {SPREAD: "data -prm800k"},
    "base_model": {SPREAD: "model"},
    "sft": {"train": "sft -source", "prm800k_levels": "data.easy_levels"},
    "sft_full": {"train": "sft -source", "prm800k_levels": ALL_LEVELS},
    "sample": _SAMPLE,
    "sample_greedy": _GREEDY,
    "sample_icl": {**_SAMPLE, **_ICL},
    "sample_icl_greedy": {**_GREEDY, **_ICL},
    "grade_train": {SPREAD: "grading"},
    "evaluate": {SPREAD: "grading"},
    "ppo_gold_selected": {**_SAMPLER, "grading": "grading"},
    "orm_data": {SPREAD: "evaluators.orm -train"},
    "prm_data": {**_PRM_DATA, "easy_levels": "data.easy_levels"},
    "prm_data_full": {**_PRM_DATA, "easy_levels": ALL_LEVELS},
    "oprm_data": {SPREAD: "evaluators.oprm -train"},
    # evaluators.train with the kind's own overrides; an oracle (<kind>_full) trains like its kind.
    "train_evaluator": {
        "train": ["evaluators.train", "evaluators.{kind}.train"],
        "label_tokens": "evaluators.label_tokens",
    },
    "score": {SPREAD: "evaluators.score"},
    "evaluator_report": {"easy_levels": "data.easy_levels", "aggregation": "evaluators.aggregation"},
    "rest_em_data": {"selection": "rl.rest_em.filter", **_SELECTION},
    "rest_em": {"train": "rl.rest_em.train"},
    "dpo_pairs": {"selection": "rl.dpo +pairs_per_question +min_margin +easy_use_answers", **_SELECTION},
    "dpo": {"train": "rl.dpo.train", "dpo": "rl.dpo +beta +loss_type +label_smoothing"},
    "ppo": {
        "ppo": "rl.ppo -rounds -policy_train -value_train -checkpoint_selection",
        "ppo.aggregation": "rl.aggregation",
        "policy_train": "rl.ppo.policy_train",
        "value_train": "rl.ppo.value_train",
        **_SAMPLER,
        "grading": "grading",
        "score_batch_size": "evaluators.score.batch_size",
    },
    "provenance": {SPREAD: ". -threads"},
    "report": {
        "easy_levels": "data.easy_levels",
        "num_draws": "report.num_draws",
        "seed": "report.seed",
        "bootstrap": "report.bootstrap",
        "aggregations": "report.aggregations",
        "evaluator_aggregation": "evaluators.aggregation",
        "grader": "grading.mode",
        "data_source": "data.source",
        "huggingface_test_name": "data.huggingface.test_name",
    },
    "rl_report": {"easy_levels": "data.easy_levels"},
}

# Keys that decide which jobs run and what they read or are granted, not what a job computes.
DAG_KEYS = (
    "data.prm800k",  # inputs of sft/prm_data with source prm800k
    "sft.source",
    "evaluators.prm.source",  # which inputs the stage reads (the latter is also a param)
    "evaluators.kinds",
    "evaluators.init",
    "rl.evaluator",
    "rl.rest_em.init",
    "rl.rest_em.rounds",
    "rl.dpo.rounds",
    "rl.ppo.rounds",
    "rl.ppo.checkpoint_selection",
    "report.generators",
    "icl.enabled",
    "oracles",
    "compute.train_gpus",
    "compute.train_nodes",
    "compute.cpu_bf16",  # resources, launcher, job environment
    "threads",
)


def _parse(spec: str) -> tuple[str, list[str], set[str]]:
    """A key spec's config path, the keys it keeps (+name) and the keys it drops (-name)."""
    path, *edits = spec.split()
    return path, [e[1:] for e in edits if e.startswith("+")], {e[1:] for e in edits if e.startswith("-")}


def _lookup(config: dict, path: str, wildcards: dict) -> object:
    if path == ".":
        return config
    value = config
    path = path.format(**wildcards)
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"config: field '{path}' is missing")
        value = value[part]
    return value


def _resolve(spec: object, config: dict, wildcards: dict) -> object:
    """A literal, or the config value a key spec names (with its -dropped / +kept keys), or the
    merge of a list of sections."""
    if isinstance(spec, list) and all(isinstance(item, str) for item in spec):
        return {k: v for item in spec for k, v in _resolve(item, config, wildcards).items()}
    if not isinstance(spec, str):
        return spec
    path, kept, dropped = _parse(spec)
    if kept:
        return {k: _lookup(config, f"{path}.{k}", wildcards) for k in kept}
    value = _lookup(config, path, wildcards)
    return {k: v for k, v in value.items() if k not in dropped} if dropped else value


def params(config: dict, stage: str, **wildcards) -> dict:
    """The params of one job of `stage`: a fresh dict (the config is not modified)."""
    result: dict = {}
    for name, spec in STAGE_PARAMS[stage].items():
        value = copy.deepcopy(_resolve(spec, config, wildcards))  # nesting below must not write into config
        if name == SPREAD:
            result.update(value)
            continue
        *parents, leaf = name.split(".")
        target = result
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return result


def _under(key: str, path: str) -> bool:
    """Whether `key` is `path` or inside it (`{split}`/`{kind}` match any one key; `.` is everything)."""
    if path == ".":
        return True
    parts, key_parts = path.split("."), key.split(".")
    return len(parts) <= len(key_parts) and all(p == k or p.startswith("{") for p, k in zip(parts, key_parts))


def reruns(key: str) -> list[str]:
    """The stages whose params change when config key `key` (a dotted path) changes: what it
    re-runs directly (their dependents follow)."""

    def receives(spec: str) -> bool:
        path, kept, dropped = _parse(spec)
        prefix = "" if path == "." else f"{path}."
        received = [prefix + k for k in kept] or [path]
        inside = any(_under(key, p) for p in received) and not any(_under(key, prefix + d) for d in dropped)
        return inside or any(_under(p, key) for p in received)  # `key` is a section holding one

    def key_specs(table: dict) -> list[str]:  # merged lists flattened; literals are no config key
        return [
            s for spec in table.values() for s in (spec if isinstance(spec, list) else [spec]) if isinstance(s, str)
        ]

    return [stage for stage, table in STAGE_PARAMS.items() if any(receives(spec) for spec in key_specs(table))]


if __name__ == "__main__":
    for key in sys.argv[1:]:
        print(f"{key}: {', '.join(reruns(key)) or 'no stage params (see DAG_KEYS)'}")
