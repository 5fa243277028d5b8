rule base_model:
    """The base policy as an HF folder: a pretrained model, or a tiny Llama with an offline tokenizer."""
    input:
        unpack(tokenizer_text_inputs),
    output:
        directory("results/models/base"),
    params:
        cfg=stage_params("base_model"),
        script=script("build_base_model.py"),
        text=lambda wildcards, input: " ".join(f"--{k.replace('_', '-')} {v}" for k, v in input.items()),
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/base_model.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} {params.text} --out {output} > {log} 2>&1"


BASE_MODEL = str(rules.base_model.output[0])  # a path, without the directory() flag
