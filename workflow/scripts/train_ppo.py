"""PPO, one round: policy and value model optimised against the frozen easy-trained PRM (process
reward on every question, outcome reward from easy gold answers only) with a KL penalty to the
frozen SFT reference."""

import json
import os
import shutil
from pathlib import Path

import torch

from easy2hard import cli, evaluator, modeling, ppo, sampling, training
from easy2hard.config import from_dict
from easy2hard.io import read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--policy", required=True, help="the previous round's policy (SFT in round 1)")
    p.add_argument(
        "--value", required=True, help="value initialisation: the reward model, or the previous round's value model"
    )
    p.add_argument("--reference", required=True, help="frozen reference policy (SFT)")
    p.add_argument("--reward-model", required=True, help="frozen evaluator (PRM)")
    p.add_argument("--train-easy", required=True, help="easy train questions with their gold answers")
    p.add_argument("--train-hard", required=True, help="hard train questions (no answers)")
    p.add_argument("--out", required=True)
    p.add_argument("--value-out", required=True)
    p.add_argument(
        "--snapshots",
        required=True,
        help="policy snapshots every rl.ppo.snapshot_every steps (for the checkpoint selection option; empty when 0)",
    )
    args = p.parse_args()
    cli.setup(args)
    params = args.params
    _, dtype = modeling.device_and_dtype()
    policy, tokenizer = modeling.load_model(args.policy, dtype=torch.float32)  # fp32 master weights
    value, _ = evaluator.load_backbone(args.value, dtype=torch.float32)
    reference, _ = modeling.load_model(args.reference, dtype=dtype)
    reward_model, _ = evaluator.load_backbone(args.reward_model, dtype=dtype)
    easy = read_jsonl(args.train_easy, required=("unique_id", "problem", "level", "answer"))
    hard = read_jsonl(args.train_hard, required=("unique_id", "problem", "level"))
    sampling_config = sampling.SamplingConfig(**{**params["sampling"], "num_samples": 1})
    trainer = ppo.PPOTrainer(
        ppo.Models(policy, value, reference, reward_model, tokenizer),
        questions=easy + hard,
        easy_gold={row["unique_id"]: row["answer"] for row in easy},
        config=from_dict(ppo.PPOConfig, params["ppo"], "rl.ppo"),
        policy_train=ppo.PPOPolicyTrainConfig.from_dict(params["policy_train"]),
        value_train=ppo.PPOValueTrainConfig.from_dict(params["value_train"]),
        sampling_config=sampling_config,
        grading=params["grading"],
        score_batch_size=params["score_batch_size"],
    )
    # Snapshots are staged beside the output (a resumed run keeps those it has) and appear with it.
    staging = Path(f"{args.snapshots.rstrip('/')}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    tracker = training.tracker_for(trainer.policy.config, args.out, {"ppo": params["ppo"]})
    policy, value, history = trainer.train(
        training.checkpoint_dir_for(args.out), {"inputs": vars(args)}, str(staging), tracker
    )
    if training.world()[0] == 0:  # before the policy's save, which removes the checkpoints a resume needs
        steps = sorted(
            step
            for step in (int(path.name.removeprefix("step_")) for path in staging.glob("step_*"))
            if step < len(history)
        )
        (staging / "snapshots.json").write_text(json.dumps({"steps": steps, "final_step": len(history)}) + "\n")
        shutil.rmtree(args.snapshots, ignore_errors=True)
        os.replace(staging, args.snapshots)
    # Value first: the policy's save removes the run's checkpoints, so it must come last.
    training.save_model(value, tokenizer, args.value_out, history, trainer.value.config)
    without_signal = sum(record["same_reward_for_all"] for record in history)
    training.save_model(
        policy,
        tokenizer,
        args.out,
        history,
        trainer.policy.config,
        {"ppo": params["ppo"], "steps_without_reward_signal": without_signal},
    )
    last = history[-1]
    print(
        f"{len(history)} PPO steps ({without_signal} without reward signal: every rollout earned the same reward);"
        f" last reward {last['reward']:.3f}, KL {last['kl']:.3f}"
    )
    cli.finish(args, sampling=trainer.sampling_usage.as_record(), grading=trainer.grading_stats.as_record())
