# easy2hard: train on easy problems, evaluate on hard ones (Sun et al., NeurIPS 2024).
# The offline default (config.yaml) runs in minutes on a laptop; presets in configs/ override it.

from pathlib import Path

from snakemake.utils import min_version

min_version("8.20")


# Defaults sit beside this file, so `--directory elsewhere` still finds them; --configfile
# presets and --config key=value are merged on top.
configfile: Path(workflow.basedir) / "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/sft.smk"
include: "rules/sample.smk"
include: "rules/grade.smk"
include: "rules/evaluate.smk"
include: "rules/evaluators.smk"
include: "rules/rl.smk"
include: "rules/report.smk"


report: "workflow/report/workflow.rst"


onsuccess:
    warn_sampling_fallbacks()


onerror:
    warn_sampling_fallbacks()


rule all:
    input:
        "results/graded/sft/train.jsonl",
        expand("results/eval/{generator}/valid.jsonl", generator=GENERATORS),
        REPORT_FILES,
        [f"results/scores/{e}/{g}/test.jsonl" for e, g in REPORT_SCORES],
        "results/report/evaluators.md",
        ["results/report/rl_training.png"] if REPORTED_RL else [],
    default_target: True
