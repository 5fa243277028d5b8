# RL against the easy-trained evaluator, on all train questions (easy with answers, hard without).
# Each algorithm is a rule family over rounds: `results/models/<algorithm>_r<k>` is round k's
# policy, which starts from round k-1 (SFT for k = 1). Every such policy is a generator like
# `sft`: `snakemake results/eval/dpo_r2/test.jsonl` samples and grades it, the report compares it.
# None of these rules reads results/gold/: easy questions are graded against easy gold only.

rule rest_em_data:
    """ReST-EM E-step: the previous policy's train solutions that pass the filter."""
    input:
        unpack(rl_data_inputs("rest_em")),
    output:
        data="results/rl/rest_em_r{round}/train.jsonl",
        stats="results/rl/rest_em_r{round}/stats.json",
    params:
        cfg=stage_params("rest_em_data"),
        script=script("rl_data.py") + " --algorithm rest_em",
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl/rest_em_data_r{round}.log",
    shell:
        "{params.script} --params {params.cfg:q} --graded {input.graded} --scores {input.scores}"
        " --questions {input.questions} --out {output.data} --stats {output.stats} > {log} 2>&1"


rule rest_em:
    """ReST-EM M-step: fine-tune the base or SFT model on the kept solutions (the SFT loop)."""
    input:
        init=f"results/models/{config['rl']['rest_em']['init']}",
        data="results/rl/rest_em_r{round}/train.jsonl",
        stats="results/rl/rest_em_r{round}/stats.json",
    output:
        directory("results/models/rest_em_r{round}"),
    params:
        cfg=stage_params("rest_em"),
        script=train_script("sft.py"),
    resources:
        **TRAIN_RESOURCES,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl/rest_em_r{round}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --base {input.init}"
        " --data {input.data} --stats {input.stats} --out {output} > {log} 2>&1"


rule dpo_pairs:
    """Iterative DPO data: best vs worst evaluator-ranked solutions of the previous policy."""
    input:
        unpack(rl_data_inputs("dpo")),
    output:
        data="results/rl/dpo_r{round}/pairs.jsonl",
        stats="results/rl/dpo_r{round}/stats.json",
    params:
        cfg=stage_params("dpo_pairs"),
        script=script("rl_data.py") + " --algorithm dpo",
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl/dpo_pairs_r{round}.log",
    shell:
        "{params.script} --params {params.cfg:q} --graded {input.graded} --scores {input.scores}"
        " --questions {input.questions} --out {output.data} --stats {output.stats} > {log} 2>&1"


rule dpo:
    """Iterative DPO, one round: DPO loss with the previous policy as initialisation and reference."""
    input:
        policy=lambda wildcards: previous_policy("dpo", wildcards.round),
        pairs="results/rl/dpo_r{round}/pairs.jsonl",
        stats="results/rl/dpo_r{round}/stats.json",
    output:
        directory("results/models/dpo_r{round}"),
    params:
        cfg=stage_params("dpo"),
        script=train_script("train_dpo.py"),
    resources:
        **TRAIN_RESOURCES,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl/dpo_r{round}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --policy {input.policy}"
        " --pairs {input.pairs} --stats {input.stats} --out {output} > {log} 2>&1"


rule ppo:
    """PPO, one round: rollouts on all train questions, PRM process reward, easy-only outcome reward."""
    input:
        policy=lambda wildcards: previous_policy("ppo", wildcards.round),
        value=ppo_value_init,
        reference=SFT_MODEL,
        reward_model=f"results/evaluators/{RL_EVALUATOR}/model",
        train_easy=DATA.train_easy,
        train_hard=DATA.train_hard,
    output:
        policy=directory("results/models/ppo_r{round}"),
        value=directory("results/rl/ppo_r{round}/value"),
        snapshots=directory("results/rl/ppo_r{round}/snapshots"),
    params:
        cfg=stage_params("ppo"),
        script=train_script("train_ppo.py"),
    resources:
        **TRAIN_RESOURCES,
    threads: config["threads"]["per_job"]
    conda:
        "../envs/easy2hard.yaml"
    log:
        "results/logs/rl/ppo_r{round}.log",
    shell:
        "{params.script} --params {params.cfg:q} --threads {threads} --policy {input.policy} --value {input.value}"
        " --reference {input.reference} --reward-model {input.reward_model} --train-easy {input.train_easy}"
        " --train-hard {input.train_hard} --out {output.policy} --value-out {output.value}"
        " --snapshots {output.snapshots} > {log} 2>&1"
