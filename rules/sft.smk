rule sft:
    """Full fine-tuning of the base model on easy-level reference solutions."""
    input:
        base="results/models/base",
        data=supervised_answers(),
    output:
        directory("results/models/sft"),
    params:
        cfg=lambda wildcards: as_json(config["sft"]),
        script=lambda wildcards, resources: script("sft.py", gpus=resources.gpu),
    resources:
        gpu=TRAIN_GPUS,
    threads: config["threads"]["sft"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/sft.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --base {input.base}"
        " --data {input.data} --out {output} > {log} 2>&1"


use rule sft as sft_full with:
    # Oracle (the paper's Full SFT): the same training on easy AND hard train solutions.
    input:
        base="results/models/base",
        data=supervised_answers(full=True),
    output:
        directory("results/models/sft_full"),
    log:
        "results/logs/sft_full.log",
