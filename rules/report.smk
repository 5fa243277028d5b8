rule provenance:
    """What produced the report: the whole config, code version, library and grader versions."""
    output:
        "results/report/provenance.json",
    params:
        cfg=lambda wildcards: as_json({k: v for k, v in config.items() if k != "threads"}),
        script=script("provenance.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/provenance.log",
    shell:
        "{params.script} --params {params.cfg:q} --out {output} > {log} 2>&1"


# Evaluator scores of each policy's test samples, one file per (evaluator, generator).
TEST_SCORES = rules.score.output[0].replace("{split}", "test")


rule report:
    """Greedy, majority, weighted and best-of-N accuracy vs N by level group and subject (test split)."""
    input:
        sampled=expand(rules.evaluate.output[0], generator=GENERATORS, split="test"),
        greedy=expand(rules.evaluate_greedy.output[0], generator=GENERATORS, split="test"),
        scores=[TEST_SCORES.format(evaluator=e, generator=g) for e, g in REPORT_SCORES],
        provenance=rules.provenance.output[0],
    output:
        metrics=report("results/report/metrics.csv", category="Report", caption="../workflow/report/metrics.rst"),
        comparisons=report("results/report/comparisons.csv", category="Report", caption="../workflow/report/comparisons.rst"),
        gap=report("results/report/gap_recovered.csv", category="Report", caption="../workflow/report/comparisons.rst"),
        markdown=report("results/report/report.md", category="Report", caption="../workflow/report/tables.rst"),
        plot=report("results/report/accuracy_vs_n.png", category="Report", caption="../workflow/report/plot.rst"),
        aggregations=report(
            "results/report/best_of_n_aggregations.png", category="Report", caption="../workflow/report/aggregations.rst"
        ),
        settings=report("results/report/report_settings.json", category="Report", caption="../workflow/report/settings.rst"),
    params:
        sampled=lambda wildcards, input: [f"{g}={p}" for g, p in zip(GENERATORS, input.sampled)],
        greedy=lambda wildcards, input: [f"{g}={p}" for g, p in zip(GENERATORS, input.greedy)],
        # GEN:EVALUATOR=PATH, built from the same pattern as the input, so pairs cannot get out of order.
        scores=lambda wildcards: [f"{g}:{e}={TEST_SCORES.format(evaluator=e, generator=g)}" for e, g in REPORT_SCORES],
        cfg=stage_params("report"),
        outs=lambda wildcards, output: key_paths(output),
        script=script("report.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/report.log",
    shell:
        "{params.script} --params {params.cfg:q} --sampled {params.sampled} --greedy {params.greedy}"
        " --scores {params.scores} --provenance {input.provenance} --out {params.outs} > {log} 2>&1"


rule rl_report:
    """RL training curves and validation accuracy per round (reads gold-graded validation samples)."""
    input:
        greedy=lambda wildcards: sorted(set(rl_rounds("greedy").values())),
        sampled=lambda wildcards: sorted(set(rl_rounds("sampled").values())),
        models=lambda wildcards: list(rl_rounds("models").values()),
    output:
        csv=report("results/report/rl_rounds.csv", category="RL", caption="../workflow/report/rl.rst"),
        png=report("results/report/rl_training.png", category="RL", caption="../workflow/report/rl.rst"),
    params:
        cfg=lambda wildcards: as_json({"easy_levels": config["data"]["easy_levels"]}),
        greedy=lambda wildcards: [f"{k}={v}" for k, v in rl_rounds("greedy").items()],
        sampled=lambda wildcards: [f"{k}={v}" for k, v in rl_rounds("sampled").items()],
        models=lambda wildcards: [f"{k}={v}" for k, v in rl_rounds("models").items()],
        script=script("rl_report.py"),
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl_report.log",
    shell:
        "{params.script} --params {params.cfg:q} --greedy {params.greedy} --sampled {params.sampled}"
        " --models {params.models} --out-csv {output.csv} --out-png {output.png} > {log} 2>&1"
