rule sample:
    """N sampled solutions per question (top-k, temperature) from a policy."""
    input:
        model="results/models/{generator}",
        questions=lambda wildcards: questions_for(wildcards.split),
    output:
        "results/samples/{generator}/{split}.jsonl",
    params:
        cfg=sampling_params,
        script=script("sample.py"),
    resources:
        gpu=INFERENCE_GPUS,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/sample/{generator}_{split}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --model {input.model}"
        " --questions {input.questions} --out {output} > {log} 2>&1"


use rule sample as sample_greedy with:
    output:
        "results/samples/{generator}/{split}.greedy.jsonl",
    params:
        cfg=greedy_params,
        script=script("sample.py") + " --greedy",
    log:
        "results/logs/sample/{generator}_{split}_greedy.log",
