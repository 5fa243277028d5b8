"""Stage 4: supervised fine-tuning of the base model on easy-level solutions (loss on solution
tokens only), with the shared training loop (DeepSpeed on GPU, plain torch on CPU)."""

import torch

from easy2hard import cli, modeling, training
from easy2hard.io import read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True, nargs="+", help="SFT rows: problem, steps, answer (easy; the oracle adds hard)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    config = training.TrainConfig.from_dict(args.params)
    # fp32 weights: the optimizer must not update bf16 weights directly (bf16 is for compute).
    model, tokenizer = modeling.load_model(args.base, dtype=torch.float32)
    rows = [row for path in args.data for row in read_jsonl(path, required=("problem", "steps", "answer"))]
    examples = [training.sft_example(r["problem"], r["steps"], r["answer"], tokenizer, config.max_length) for r in rows]
    examples = training.drop_too_long(examples, ", ".join(args.data), config.max_length)
    module, history = training.train(
        model, examples, config, tokenizer.pad_token_id, checkpoint_dir=training.checkpoint_dir_for(args.out)
    )
    training.save_model(module, tokenizer, args.out, history, config, {"num_examples": len(examples)})
    print(f"{len(history)} steps on {len(examples)} examples; final loss {history[-1]['loss']:.4f}")
    cli.finish(args)
