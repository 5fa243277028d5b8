rule grade_train:
    """Grade train samples against easy gold answers only; hard questions stay ungraded (null)."""
    input:
        samples="results/samples/{generator}/train.jsonl",
        train_easy="results/data/train_easy.jsonl",
    output:
        "results/graded/{generator}/train.jsonl",
    params:
        cfg=lambda wildcards: as_json(config["grading"]),
        script=script("grade_train.py"),
    threads: config["grading"]["workers"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/grade_train/{generator}.log",
    shell:
        "{params.script} --params {params.cfg:q} --samples {input.samples} --train-easy {input.train_easy}"
        " --out {output} > {log} 2>&1"
