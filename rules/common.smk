# Helpers shared by every rule: config validation, the policies and evaluators a config asks for,
# script commands, and helpers that map wildcards to inputs. The config keys each rule receives
# live in one table, workflow/easy2hard/stages.py (`stage_params`).

import json
import sys
from pathlib import Path

# The package is importable straight from the checkout (no install needed, e.g. in conda envs).
PACKAGE_ROOT = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_ROOT))

from easy2hard import stages
from easy2hard.config import GOLD_SELECTED_SUFFIX, validate_config
from easy2hard.launch import job_environment, launch_command

validate_config(config, source="config (config.yaml + --configfile/--config overrides)")

# Policies this workflow can build: SFT and every round of each RL algorithm (`<algorithm>_r<k>`,
# round 0 being SFT). In report.generators a bare algorithm name means its last round.
RL_ALGORITHMS = ("rest_em", "dpo", "ppo")
RL_ROUNDS = {algorithm: config["rl"][algorithm]["rounds"] for algorithm in RL_ALGORITHMS}
# Oracles: the same stages with supervision on every level (the paper's "Full" models). They read
# the hard train solutions in results/oracle/ (and never results/gold/); no easy-to-hard stage reads
# an oracle output (tests/test_workflow.py).
ORACLES = config["oracles"]
ORACLE_POLICIES = ["sft_full"] if ORACLES["sft_full"] else []
ORACLE_EVALUATORS = [f"{kind}_full" for kind in ORACLES["evaluators"]]
# The in-context baseline: the base model with k solved easy problems in its prompt.
BASELINES = ["icl"] if config["icl"]["enabled"] else []
# PPO's last round with its checkpoint selected with hard validation gold (the authors' choice): a
# labelled reference point like the oracles, reported beside the easy-to-hard policies.
GOLD_SELECTED = ([f"ppo_r{RL_ROUNDS['ppo']}{GOLD_SELECTED_SUFFIX}"]
                 if config["rl"]["ppo"]["checkpoint_selection"] == "hard_valid_gold" and RL_ROUNDS["ppo"] else [])
KNOWN_GENERATORS = {"sft", *ORACLE_POLICIES, *BASELINES, *GOLD_SELECTED} | {
    f"{a}_r{k}" for a, rounds in RL_ROUNDS.items() for k in range(1, rounds + 1)}


def resolve_generator(name):
    return f"{name}_r{RL_ROUNDS[name]}" if name in RL_ROUNDS else name


GENERATORS = [resolve_generator(name) for name in config["report"]["generators"]]
GENERATORS += [name for name in ORACLE_POLICIES + BASELINES + GOLD_SELECTED if name not in GENERATORS]
_unknown = sorted(set(GENERATORS) - KNOWN_GENERATORS)
if _unknown:
    raise ValueError(
        f"config: field 'report.generators': unknown policy {', '.join(_unknown)} (known: {', '.join(sorted(KNOWN_GENERATORS))};"
        " an algorithm with rounds: 0 builds no policy)"
    )
# Algorithms in the report: their training curves and per-round validation accuracy are plotted.
REPORTED_RL = [a for a in RL_ALGORITHMS if any(g.startswith(f"{a}_r") for g in GENERATORS)]
RL_EVALUATOR = config["rl"]["evaluator"]

SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"
EVALUATORS = config["evaluators"]["kinds"]
# (evaluator, generator) pairs the report scores: every easy-to-hard evaluator on every policy; each
# oracle evaluator on SFT's samples, the easy-to-hard reranking it bounds.
REPORT_SCORES = [(e, g) for e in EVALUATORS for g in GENERATORS] + [(e, "sft") for e in ORACLE_EVALUATORS]


wildcard_constraints:
    generator="[A-Za-z0-9_]+",
    round="[1-9][0-9]*",
    evaluator="(prm|orm|oprm)(_full)?",
    split="train|valid|test",


def _interpreter():
    """This Python (the one running Snakemake), or the env's `python` under --sdm conda."""
    methods = {str(method).lower() for method in getattr(workflow.deployment_settings, "deployment_method", ())}
    return "python" if any("conda" in method for method in methods) else sys.executable


JOB_ENVIRONMENT = job_environment(config["compute"]["cpu_bf16"])


def script(name, gpus=0, nodes=1):
    """The command that runs one of the stage scripts, with the package on PYTHONPATH; training
    scripts on several GPUs start one process per GPU, on several nodes one torchrun per node."""
    return (f"{JOB_ENVIRONMENT}PYTHONPATH={PACKAGE_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"
            f" {launch_command(_interpreter(), gpus, nodes)} {SCRIPTS / name}")


TRAIN_GPUS = config["compute"]["train_gpus"]
TRAIN_NODES = config["compute"]["train_nodes"]
# A training job's resources. One node: `gpu` (Snakemake's local scheduler may grant fewer, the
# launcher follows; the SLURM plugin asks --gpus). Several nodes (SLURM only): --nodes, and GPUs
# per node (the plugin's --gpus would count the whole job).
TRAIN_RESOURCES = (
    {"gpu": TRAIN_GPUS} if TRAIN_NODES == 1
    else {"nodes": TRAIN_NODES, "gpus_per_node": TRAIN_GPUS, "slurm_extra": f"'--gpus-per-node={TRAIN_GPUS}'"}
)


def train_script(name):
    """A training script's command: one process per GPU the job was granted, or one torchrun per
    node of the allocation."""
    if TRAIN_NODES > 1:
        return script(name, gpus=TRAIN_GPUS, nodes=TRAIN_NODES)
    return lambda wildcards, resources: script(name, gpus=resources.gpu)


INFERENCE_GPUS = config["compute"]["inference_gpus"]


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def stage_params(stage):
    """The config keys `stage` receives (stages.STAGE_PARAMS) as JSON: a change re-runs the job.
    `{kind}` is the evaluator wildcard without its oracle suffix (prm_full trains like prm)."""

    def params(wildcards):
        fields = dict(wildcards.items())
        if "evaluator" in fields:
            fields["kind"] = fields["evaluator"].removesuffix("_full")
        return as_json(stages.params(config, stage, **fields))

    return params


def key_paths(files):
    """A rule's named outputs as KEY=PATH arguments (cli.key_paths reads them back): a script
    writes exactly the paths its rule declares, each named once."""
    return [f"{key}={path}" for key, path in files.items()]


def source_files(wildcards):
    """Local data files are inputs, so editing them re-runs the split and everything after it."""
    if config["data"]["source"] == "math_jsonl":
        return [config["data"]["math_jsonl"]["train"], config["data"]["math_jsonl"]["test"]]
    return []


def questions_for(split):
    """Question files to sample for a split; train = easy and hard train questions."""
    if split == "train":
        return [DATA.train_easy, DATA.train_hard]
    return [getattr(DATA, split)]


def warn_sampling_fallbacks():
    """End of a run: say loudly when some outputs were sampled by `generate` although the sampling
    engine is meant to run the model (the job logs alone go unread)."""
    from easy2hard.provenance import unexpected_sampling_fallbacks

    found = unexpected_sampling_fallbacks("results")
    if found:
        lines = [f"  {path}: {'; '.join(reasons)}" for path, reasons in found.items()]
        print("WARNING: the sampling engine fell back to transformers' generate on a model it is meant to run"
              " (slower sampling; please report it):", *lines, sep="\n", file=sys.stderr)


def tokenizer_text_inputs(wildcards):
    """The tiny model's tokenizer is trained on the train text; a pretrained model needs no input."""
    if config["model"]["source"] == "tiny":
        return {"train_easy": DATA.train_easy, "train_hard": DATA.train_hard}
    return {}


def supervised_answers(full=False):
    """Train problems whose gold answers supervise: easy ones; an oracle adds the hard ones."""
    return [DATA.train_easy, *([DATA.oracle_train_hard] if full else [])]


def prm800k_inputs(full=False):
    """PRM800K records, the MATH files that give their problems' levels, and the questions they may
    not train on: test and validation, and the hard train questions (whatever the MATH files say;
    an oracle keeps those): what sft.source and evaluators.prm.source prm800k read."""
    excluded = [DATA.test, DATA.valid] + ([] if full else [DATA.train_hard])
    return {"prm800k": config["data"]["prm800k"]["files"], "math_files": config["data"]["prm800k"]["math_files"],
            "excluded_questions": excluded}


def prm800k_args(input):
    return (f"--prm800k {' '.join(input.prm800k)} --math-files {' '.join(input.math_files)}"
            f" --excluded-questions {' '.join(input.excluded_questions)}")


def sft_inputs(full=False):
    """The base model and the SFT examples' source: easy reference solutions (the oracle adds the
    hard ones), or PRM800K (the oracle keeps the records of every level)."""

    def inputs(wildcards):
        if config["sft"]["source"] == "prm800k":
            return {"base": BASE_MODEL, **prm800k_inputs(full)}
        return {"base": BASE_MODEL, "data": supervised_answers(full)}

    return inputs


def sft_args(wildcards, input):
    """PRM800K: its files (the levels its records may come from are params); else the solutions."""
    if config["sft"]["source"] == "prm800k":
        return prm800k_args(input)
    return f"--data {' '.join(input.data)}"


def prm_data_inputs(full=False):
    """Rollouts need the policy and graded samples, the labeller the graded samples; PRM800K needs
    its files, MATH levels and test questions."""
    prm = config["evaluators"]["prm"]

    def inputs(wildcards):
        if prm["source"] == "prm800k":
            return prm800k_inputs(full)
        graded = {"graded": f"results/{'graded_full' if full else 'graded'}/sft/train.jsonl",
                  "answers": supervised_answers(full)}
        return graded if prm["source"] == "labeller" else {**graded, "policy": SFT_MODEL}

    return inputs


def prm_data_args(wildcards, input):
    if config["evaluators"]["prm"]["source"] == "prm800k":
        return prm800k_args(input)
    policy = f" --policy {input.policy}" if "policy" in input.keys() else ""
    return f"--graded {input.graded} --answers {' '.join(input.answers)}{policy}"


def previous_policy(algorithm, round):
    """The policy a round starts from (and, for DPO, its reference): SFT for round 1."""
    round = int(round)
    return SFT_MODEL if round == 1 else f"results/models/{algorithm}_r{round - 1}"


def previous_name(algorithm, round):
    return Path(previous_policy(algorithm, round)).name


def rl_data_inputs(algorithm):
    """The previous policy's graded train samples, their evaluator scores, the train questions."""

    def inputs(wildcards):
        previous = previous_name(algorithm, wildcards.round)
        return {
            "graded": f"results/graded/{previous}/train.jsonl",
            "scores": f"results/scores/{RL_EVALUATOR}/{previous}/train.jsonl",
            "questions": questions_for("train"),
        }

    return inputs


def ppo_value_init(wildcards):
    """Round 1's value model starts from the reward model; later rounds continue the last one."""
    if int(wildcards.round) == 1:
        return f"results/evaluators/{RL_EVALUATOR}/model"
    return f"results/rl/ppo_r{int(wildcards.round) - 1}/value"


def rl_rounds(kind):
    """ALGORITHM:ROUND=PATH for every reported algorithm's rounds (round 0: SFT, for evals)."""
    pattern = {"greedy": "results/eval/{g}/valid.greedy.jsonl", "sampled": "results/eval/{g}/valid.jsonl",
               "models": "results/models/{g}"}[kind]
    first = 1 if kind == "models" else 0
    return {f"{a}:{k}": pattern.format(g="sft" if k == 0 else f"{a}_r{k}")
            for a in REPORTED_RL for k in range(first, RL_ROUNDS[a] + 1)}
