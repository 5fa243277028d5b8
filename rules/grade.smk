rule grade_train:
    """Grade train samples against easy gold answers only; hard questions stay ungraded (null)."""
    input:
        samples="results/samples/{generator}/train.jsonl",
        answers=supervised_answers(),
    output:
        "results/graded/{generator}/train.jsonl",
    params:
        cfg=stage_params("grade_train"),
        script=script("grade_train.py"),
    threads: config["grading"]["workers"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/grade_train/{generator}.log",
    shell:
        "{params.script} --params {params.cfg:q} --samples {input.samples} --answers {input.answers}"
        " --out {output} > {log} 2>&1"


use rule grade_train as grade_train_full with:
    # Oracle: hard train samples graded too, against the hard train answers (oracle evaluators' labels).
    input:
        samples="results/samples/{generator}/train.jsonl",
        answers=supervised_answers(full=True),
    output:
        "results/graded_full/{generator}/train.jsonl",
    log:
        "results/logs/grade_train_full/{generator}.log",
