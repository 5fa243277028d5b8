rule provenance:
    """What produced the report: the whole config, code version, library and grader versions."""
    output:
        "results/report/provenance.json",
    params:
        cfg=lambda wildcards: as_json({k: v for k, v in config.items() if k != "threads"}),
        script=script("provenance.py"),
        repo=workflow.basedir,
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/provenance.log",
    shell:
        "{params.script} --params {params.cfg:q} --repo {params.repo} --out {output} > {log} 2>&1"


rule report:
    """Greedy and maj@N accuracy by level group (easy / hard / all / each level) on the test split."""
    input:
        sampled=expand("results/eval/{generator}/test.jsonl", generator=GENERATORS),
        greedy=expand("results/eval/{generator}/test.greedy.jsonl", generator=GENERATORS),
        provenance="results/report/provenance.json",
    output:
        metrics=report("results/report/metrics.csv", category="Report", caption="../workflow/report/metrics.rst"),
        markdown=report("results/report/report.md", category="Report", caption="../workflow/report/tables.rst"),
        plot=report("results/report/accuracy_vs_n.png", category="Report", caption="../workflow/report/plot.rst"),
    params:
        sampled=lambda wildcards, input: [f"{g}={p}" for g, p in zip(GENERATORS, input.sampled)],
        greedy=lambda wildcards, input: [f"{g}={p}" for g, p in zip(GENERATORS, input.greedy)],
        easy_levels=" ".join(map(str, config["data"]["easy_levels"])),
        num_draws=config["report"]["num_draws"],
        seed=config["report"]["seed"],
        dataset=DATASET_NAME,
        script=script("report.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/report.log",
    shell:
        "{params.script} --sampled {params.sampled} --greedy {params.greedy} --easy-levels {params.easy_levels}"
        " --num-draws {params.num_draws} --seed {params.seed} --dataset {params.dataset:q} --provenance {input.provenance}"
        " --out-dir results/report > {log} 2>&1"
