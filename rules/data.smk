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
        oracle_train_hard=ORACLE_TRAIN_HARD,
    params:
        cfg=lambda wildcards: as_json({k: v for k, v in config["data"].items() if k != "prm800k"}),
        script=script("prepare_data.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/prepare_data.log",
    shell:
        "{params.script} --params {params.cfg:q} --data-dir results/data --gold-dir results/gold"
        " --oracle-dir results/oracle > {log} 2>&1"
