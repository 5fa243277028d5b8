# The only rules that read results/gold/ (valid/test gold answers of every level): evaluation, and
# the explicitly labelled PPO checkpoint selection with hard validation gold (rl.ppo.checkpoint_selection),
# whose policy `ppo_r<k>_gold_selected` is reported as such and feeds no easy-to-hard stage.


rule evaluate:
    """Extract, cluster and grade the answers of sampled solutions against the gold answers."""
    input:
        samples="results/samples/{generator}/{split}.jsonl",
        gold="results/gold/{split}.jsonl",
    output:
        "results/eval/{generator}/{split}.jsonl",
    params:
        cfg=stage_params("evaluate"),
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


rule ppo_gold_selected:
    """The authors' PPO checkpoint choice: the snapshot with the best greedy validation accuracy on
    every level (reads hard validation gold: a labelled reference point, not easy-to-hard)."""
    input:
        final="results/models/ppo_r{round}",
        snapshots="results/rl/ppo_r{round}/snapshots",
        questions=DATA.valid,
        gold=DATA.valid_gold,
    output:
        model=directory("results/models/ppo_r{round}_gold_selected"),
        table="results/rl/ppo_r{round}/gold_selection.csv",
    params:
        cfg=stage_params("ppo_gold_selected"),
        script=script("select_checkpoint.py"),
    resources:
        gpu=INFERENCE_GPUS,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl/ppo_r{round}_gold_selected.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --final {input.final}"
        " --snapshots {input.snapshots} --questions {input.questions} --gold {input.gold}"
        " --out {output.model} --table {output.table} > {log} 2>&1"
