"""Train an evaluator (PRM / ORM / OPRM): scalar head on a policy backbone, binary
cross-entropy on the labelled tokens, with the shared training loop."""

import torch

from easy2hard import cli, evaluator, training
from easy2hard.io import read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--init", required=True, help="policy (or evaluator) folder to start from")
    p.add_argument("--data", required=True)
    p.add_argument("--stats", help="the data stage's counts: why the data is empty, if it is")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    # evaluators.train with evaluators.<kind>.train merged over it (stages.STAGE_PARAMS)
    config = evaluator.EvaluatorTrainConfig.from_dict(args.params["train"])
    label_tokens = args.params["label_tokens"]
    torch.manual_seed(config.seed)  # the new score head is initialised here: reproducible runs
    with training.partitioned_loading(config):  # ZeRO-3: partitioned as it loads
        model, tokenizer = evaluator.load_backbone(args.init, dtype=torch.float32)  # fp32 master weights
    rows = read_jsonl(args.data, required=("unique_id", "problem", "steps", "answer", "labels", "kind"))
    examples = [evaluator.training_example(row, tokenizer, config.max_length, label_tokens) for row in rows]
    kept = training.drop_too_long(examples, args.data, config.max_length, args.stats)
    module, history = training.train(
        model,
        kept,
        config,
        tokenizer.pad_token_id,
        loss_fn=evaluator.bce_loss,
        checkpoint_dir=training.checkpoint_dir_for(args.out),
        tracker=training.tracker_for(config, args.out),
    )
    training.save_model(
        module, tokenizer, args.out, history, config, {"label_tokens": label_tokens, "num_examples": len(kept)}
    )
    print(f"{len(history)} steps on {len(kept)} examples; final loss {history[-1]['loss']:.4f}")
    cli.finish(args)
