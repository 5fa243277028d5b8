rule sample:
    """N sampled solutions per question (top-k, temperature) from a policy."""
    input:
        model="results/models/{generator}",
        questions=lambda wildcards: questions_for(wildcards.split),
    output:
        "results/samples/{generator}/{split}.jsonl",
    params:
        cfg=stage_params("sample"),
        script=script("sample.py"),
        extra="",
    resources:
        gpu=INFERENCE_GPUS,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/sample/{generator}_{split}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --model {input.model}"
        " --questions {input.questions} {params.extra} --out {output} > {log} 2>&1"


use rule sample as sample_greedy with:
    output:
        "results/samples/{generator}/{split}.greedy.jsonl",
    params:
        cfg=stage_params("sample_greedy"),
        script=script("sample.py") + " --greedy",
        extra="",
    log:
        "results/logs/sample/{generator}_{split}_greedy.log",


# The in-context baseline (icl.enabled): the BASE model prompted with icl.k solved easy train
# problems, sampled like a policy (the generator "icl").
use rule sample as sample_icl with:
    input:
        model=BASE_MODEL,
        questions=lambda wildcards: questions_for(wildcards.split),
        exemplars=DATA.train_easy,
    output:
        "results/samples/icl/{split}.jsonl",
    params:
        cfg=stage_params("sample_icl"),
        script=script("sample.py"),
        extra=lambda wildcards, input: f"--exemplars {input.exemplars}",
    log:
        "results/logs/sample/icl_{split}.log",


use rule sample_icl as sample_icl_greedy with:
    output:
        "results/samples/icl/{split}.greedy.jsonl",
    params:
        cfg=stage_params("sample_icl_greedy"),
        script=script("sample.py") + " --greedy",
        extra=lambda wildcards, input: f"--exemplars {input.exemplars}",
    log:
        "results/logs/sample/icl_{split}_greedy.log",


ruleorder: sample_icl > sample
ruleorder: sample_icl_greedy > sample_greedy
