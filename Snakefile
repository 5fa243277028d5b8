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
        expand(rules.grade_train.output[0], generator="sft"),
        expand(rules.evaluate.output[0], generator=GENERATORS, split="valid"),
        rules.report.output,
        [expand(rules.score.output[0], evaluator=e, generator=g, split="test") for e, g in REPORT_SCORES],
        rules.evaluator_report.output,
        rules.rl_report.output if REPORTED_RL else [],
    default_target: True
