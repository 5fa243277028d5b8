# The only rules that read results/gold/ (valid/test gold answers of every level).


rule evaluate:
    """Extract, cluster and grade the answers of sampled solutions against the gold answers."""
    input:
        samples="results/samples/{generator}/{split}.jsonl",
        gold="results/gold/{split}.jsonl",
    output:
        "results/eval/{generator}/{split}.jsonl",
    params:
        cfg=lambda wildcards: as_json(config["grading"]),
        script=script("evaluate.py"),
    threads: config["grading"]["workers"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/evaluate/{generator}_{split}.log",
    shell:
        "{params.script} --params {params.cfg:q} --samples {input.samples} --gold {input.gold}"
        " --out {output} > {log} 2>&1"


use rule evaluate as evaluate_greedy with:
    input:
        samples="results/samples/{generator}/{split}.greedy.jsonl",
        gold="results/gold/{split}.jsonl",
    output:
        "results/eval/{generator}/{split}.greedy.jsonl",
    log:
        "results/logs/evaluate/{generator}_{split}_greedy.log",
