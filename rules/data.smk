rule prepare_data:
    """Load problems and split by level; gold answers of valid/test go to results/gold/,
    which only the evaluation rules read; hard train solutions go to results/oracle/, which only
    the oracle rules read (the "Full" upper bounds)."""
    input:
        source_files,
    output:
        train_easy="results/data/train_easy.jsonl",
        train_hard="results/data/train_hard.jsonl",
        valid="results/data/valid.jsonl",
        test="results/data/test.jsonl",
        summary="results/data/summary.json",
        valid_gold="results/gold/valid.jsonl",
        test_gold="results/gold/test.jsonl",
        oracle_train_hard="results/oracle/train_hard.jsonl",
    params:
        cfg=stage_params("prepare_data"),
        outputs=lambda wildcards, output: key_paths(output),
        script=script("prepare_data.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/prepare_data.log",
    shell:
        "{params.script} --params {params.cfg:q} --out {params.outputs} > {log} 2>&1"


# The split's files, named by the rule that writes them (DATA.train_easy, DATA["valid"], ...).
DATA = rules.prepare_data.output
