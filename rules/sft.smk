rule sft:
    """Full fine-tuning of the base model on easy-level reference solutions, or on PRM800K steps."""
    input:
        unpack(sft_inputs()),
    output:
        directory("results/models/sft"),
    params:
        cfg=stage_params("sft"),
        args=sft_args,
        script=train_script("sft.py"),
    resources:
        **TRAIN_RESOURCES,
    threads: config["threads"]["sft"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/sft.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --base {input.base}"
        " {params.args} --out {output} > {log} 2>&1"


SFT_MODEL = str(rules.sft.output[0])


use rule sft as sft_full with:
    # Oracle (the paper's Full SFT): the same training on easy AND hard train solutions.
    input:
        unpack(sft_inputs(full=True)),
    output:
        directory("results/models/sft_full"),
    params:
        cfg=stage_params("sft_full"),
        args=sft_args,
        script=train_script("sft.py"),
    log:
        "results/logs/sft_full.log",
