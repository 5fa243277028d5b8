"""Iterative DPO, one round: the DPO loss against the round's starting policy (the reference),
whose log-probabilities of every pair are computed once before training; the shared loop."""

import torch

from easy2hard import cli, dpo, modeling, training
from easy2hard.config import from_dict
from easy2hard.io import read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--policy", required=True, help="the previous round's policy: initialisation and reference")
    p.add_argument("--pairs", required=True)
    p.add_argument("--stats", help="the pair stage's counts: why there is no pair, if there is none")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    config = dpo.DPOTrainConfig.from_dict(args.params["train"])
    dpo_config = from_dict(dpo.DPOConfig, args.params["dpo"], "rl.dpo")
    model, tokenizer = modeling.load_model(args.policy, dtype=torch.float32)
    rows = read_jsonl(args.pairs, required=("unique_id", "problem", "chosen", "rejected"))
    examples = [dpo.pair_example(row["problem"], row, tokenizer, config.max_length) for row in rows]
    kept = training.drop_too_long(examples, args.pairs, config.max_length, args.stats)
    model.to(modeling.device_and_dtype()[0])
    references = dpo.reference_logps(model, kept, tokenizer.pad_token_id, dpo_config, config.micro_batch_size)
    kept = [{**example, "ref_logps": ref} for example, ref in zip(kept, references)]
    module, history = training.train(
        model,
        kept,
        config,
        tokenizer.pad_token_id,
        loss_fn=dpo.loss_fn(dpo_config),
        collate_fn=dpo.collate_pairs,
        checkpoint_dir=training.checkpoint_dir_for(args.out),
        tracker=training.tracker_for(config, args.out, {"dpo": args.params["dpo"]}),
    )
    training.save_model(
        module, tokenizer, args.out, history, config, {"dpo": args.params["dpo"], "num_pairs": len(kept)}
    )
    last = history[-1]
    print(
        f"{len(history)} steps on {len(kept)} pairs; final loss {last['loss']:.4f}, "
        f"reward accuracy {last['reward_accuracy']:.2f}"
    )
    cli.finish(args)
