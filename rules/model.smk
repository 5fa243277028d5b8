rule base_model:
    """The base policy as an HF folder: a pretrained model, or a tiny Llama with an offline tokenizer."""
    input:
        train_easy="results/data/train_easy.jsonl",
        train_hard="results/data/train_hard.jsonl",
    output:
        directory("results/models/base"),
    params:
        cfg=lambda wildcards: as_json(config["model"]),
        script=script("build_base_model.py"),
    threads: config["threads"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/base_model.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --train-easy {input.train_easy}"
        " --train-hard {input.train_hard} --out {output} > {log} 2>&1"
