rule sft:
    """Full fine-tuning of the base model on easy-level reference solutions."""
    input:
        base="results/models/base",
        train_easy="results/data/train_easy.jsonl",
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
        " --data {input.train_easy} --out {output} > {log} 2>&1"
