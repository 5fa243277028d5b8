"""Stage 4: supervised fine-tuning of the base model (loss on solution tokens only), with the
shared training loop (DeepSpeed on GPU, plain torch on CPU). Examples: easy-level reference
solutions (`--data`), or PRM800K's +1-rated steps, one per solution prefix (`--prm800k`)."""

import torch

from easy2hard import cli, modeling, prm800k_data, training
from easy2hard.io import read_jsonl


def reference_examples(paths, tokenizer, max_length):
    rows = [row for path in paths for row in read_jsonl(path, required=("problem", "steps", "answer"))]
    return [training.sft_example(r["problem"], r["steps"], r["answer"], tokenizer, max_length) for r in rows], {}


def prm800k_examples(args, tokenizer, max_length):
    levels = prm800k_data.math_levels(args.math_files)
    excluded = {
        r["problem"].strip() for path in args.excluded_questions for r in read_jsonl(path, required=("problem",))
    }
    records = [r for path in args.prm800k for r in prm800k_data.read_records(path)]
    rows, counts = prm800k_data.sft_rows(
        records, levels, args.params["prm800k_levels"], excluded, ", ".join(args.prm800k)
    )
    examples = [
        training.continuation_example(r["problem"], r["context"], r["target"], r["final"], tokenizer, max_length)
        for r in rows
    ]
    return examples, dict(counts)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--base", required=True)
    p.add_argument("--data", nargs="+", help="SFT rows: problem, steps, answer (easy; the oracle adds hard)")
    p.add_argument("--prm800k", nargs="+", help="PRM800K JSONL (instead of --data)")
    p.add_argument("--math-files", nargs="*", default=[], help="--prm800k: MATH files giving each problem's level")
    p.add_argument(
        "--excluded-questions",
        nargs="*",
        default=[],
        help="--prm800k: questions never trained on (test, validation; hard train unless an oracle)",
    )
    p.add_argument("--stats", help="--data from a data stage (ReST-EM): its counts, which say why it is empty")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if bool(args.data) == bool(args.prm800k):
        p.error("give exactly one of --data and --prm800k")
    cli.setup(args)
    config = training.TrainConfig.from_dict(args.params["train"])
    # fp32 weights: the optimizer must not update bf16 weights directly (bf16 is for compute).
    with training.partitioned_loading(config):  # ZeRO-3: partitioned as it loads
        model, tokenizer = modeling.load_model(args.base, dtype=torch.float32)
    if args.prm800k:
        examples, counts = prm800k_examples(args, tokenizer, config.max_length)
        print("PRM800K SFT data:", counts)
    else:
        examples, counts = reference_examples(args.data, tokenizer, config.max_length)
    examples = training.drop_too_long(examples, ", ".join(args.data or args.prm800k), config.max_length, args.stats)
    module, history = training.train(
        model,
        examples,
        config,
        tokenizer.pad_token_id,
        checkpoint_dir=training.checkpoint_dir_for(args.out),
        tracker=training.tracker_for(config, args.out),
    )
    training.save_model(module, tokenizer, args.out, history, config, {"num_examples": len(examples), **counts})
    print(f"{len(history)} steps on {len(examples)} examples; final loss {history[-1]['loss']:.4f}")
    cli.finish(args)
