# Evaluators trained with easy supervision only: ORM (outcome labels), PRM (step labels from
# PRM800K or from policy rollouts), OPRM (both). `snakemake results/evaluators/oprm/model`
# builds and trains just one; `results/scores/{evaluator}/{generator}/{split}.jsonl` scores samples.


rule orm_data:
    """Outcome labels of graded EASY train samples, balanced per question (1:3 to 3:1)."""
    input:
        graded="results/graded/sft/train.jsonl",
        questions=supervised_answers(),
    output:
        data="results/evaluators/orm/train.jsonl",
        stats="results/evaluators/orm/stats.json",
    params:
        cfg=stage_params("orm_data"),
        script=script("orm_data.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/evaluators/orm_data.log",
    shell:
        "{params.script} --params {params.cfg:q} --graded {input.graded} --questions {input.questions}"
        " --out {output.data} --stats {output.stats} > {log} 2>&1"


use rule orm_data as orm_data_full with:
    # Oracle: outcome labels on easy AND hard train samples.
    input:
        graded="results/graded_full/sft/train.jsonl",
        questions=supervised_answers(full=True),
    output:
        data="results/evaluators/orm_full/train.jsonl",
        stats="results/evaluators/orm_full/stats.json",
    log:
        "results/logs/evaluators/orm_full_data.log",


rule prm_data:
    """Step labels: Monte-Carlo rollouts of the SFT policy on EASY train samples (auto), or PRM800K."""
    input:
        unpack(prm_data_inputs()),
    output:
        data="results/evaluators/prm/train.jsonl",
        stats="results/evaluators/prm/stats.json",
    params:
        cfg=stage_params("prm_data"),
        script=script("prm_data.py"),
        args=prm_data_args,
    resources:
        gpu=INFERENCE_GPUS,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/evaluators/prm_data.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} {params.args}"
        " --out {output.data} --stats {output.stats} > {log} 2>&1"


use rule prm_data as prm_data_full with:
    # Oracle: step labels from rollouts on easy AND hard train samples (or PRM800K of every level).
    input:
        unpack(prm_data_inputs(full=True)),
    output:
        data="results/evaluators/prm_full/train.jsonl",
        stats="results/evaluators/prm_full/stats.json",
    params:
        cfg=stage_params("prm_data_full"),
        script=script("prm_data.py"),
        args=prm_data_args,
    log:
        "results/logs/evaluators/prm_full_data.log",


rule oprm_data:
    """A mixture of the PRM and ORM examples."""
    input:
        prm="results/evaluators/prm/train.jsonl",
        orm="results/evaluators/orm/train.jsonl",
    output:
        data="results/evaluators/oprm/train.jsonl",
        stats="results/evaluators/oprm/stats.json",
    params:
        cfg=stage_params("oprm_data"),
        script=script("oprm_data.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/evaluators/oprm_data.log",
    shell:
        "{params.script} --params {params.cfg:q} --prm {input.prm} --orm {input.orm}"
        " --out {output.data} --stats {output.stats} > {log} 2>&1"


use rule oprm_data as oprm_data_full with:
    input:
        prm="results/evaluators/prm_full/train.jsonl",
        orm="results/evaluators/orm_full/train.jsonl",
    output:
        data="results/evaluators/oprm_full/train.jsonl",
        stats="results/evaluators/oprm_full/stats.json",
    log:
        "results/logs/evaluators/oprm_full_data.log",


rule train_evaluator:
    """Scalar head on the policy backbone, BCE on the labelled tokens, the shared training loop."""
    input:
        init=f"results/models/{config['evaluators']['init']}",
        data="results/evaluators/{evaluator}/train.jsonl",
        stats="results/evaluators/{evaluator}/stats.json",
    output:
        directory("results/evaluators/{evaluator}/model"),
    params:
        cfg=stage_params("train_evaluator"),
        script=train_script("train_evaluator.py"),
    resources:
        **TRAIN_RESOURCES,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/evaluators/train_{evaluator}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --init {input.init} --data {input.data}"
        " --stats {input.stats} --out {output} > {log} 2>&1"


rule score:
    """Per-step (and answer) scores of every sampled solution of a split."""
    input:
        evaluator="results/evaluators/{evaluator}/model",
        samples="results/samples/{generator}/{split}.jsonl",
        questions=lambda wildcards: questions_for(wildcards.split),
    output:
        "results/scores/{evaluator}/{generator}/{split}.jsonl",
    params:
        cfg=stage_params("score"),
        script=script("score.py"),
    resources:
        gpu=INFERENCE_GPUS,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/score/{evaluator}_{generator}_{split}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --evaluator {input.evaluator}"
        " --samples {input.samples} --questions {input.questions} --out {output} > {log} 2>&1"


rule evaluator_report:
    """Evaluator quality on validation samples by level (reads gold-graded samples: evaluation)."""
    input:
        eval=expand(rules.evaluate.output[0], generator="sft", split="valid"),
        scores=expand(rules.score.output[0], evaluator=EVALUATORS + ORACLE_EVALUATORS, generator="sft", split="valid"),
    output:
        csv=report("results/report/evaluators.csv", category="Evaluators", caption="../workflow/report/evaluators.rst"),
        md=report("results/report/evaluators.md", category="Evaluators", caption="../workflow/report/evaluators.rst"),
    params:
        cfg=stage_params("evaluator_report"),
        scores=lambda wildcards, input: [f"{e}={p}" for e, p in zip(EVALUATORS + ORACLE_EVALUATORS, input.scores)],
        script=script("evaluator_report.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/evaluator_report.log",
    shell:
        "{params.script} --params {params.cfg:q} --eval {input.eval} --scores {params.scores}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
