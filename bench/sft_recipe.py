"""SFT recipe probe for the offline miniature: train the tiny Llama on EASY synthetic problems
only (the SFT stage's own code) and print its greedy accuracy per level on a held-out draw.

    python bench/sft_recipe.py --train-per-level 1000 1000 1000 --max-value 20 --lr 3e-3 --batch 32 --epochs 7

The held-out problems are a separate draw ("recipe-heldout", seed + 1000), neither the
validation nor the test split of a run, so choosing a recipe here reads no test answer. One
JSON line per run: the arguments, parameters, train tokens, wall time, tokens/s, final loss,
greedy accuracy (%) per level.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import torch  # noqa: E402

from easy2hard import formats, modeling, sampling, synthetic, training  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-per-level", type=int, nargs=3, default=[1000, 1000, 1000], help="levels 1-3")
    p.add_argument("--max-value", type=int, default=None)
    p.add_argument("--style", choices=synthetic.STYLES, default="expression")
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        help="also sample this many per held-out problem (T=0.7): accuracy per sample and pass@samples per level",
    )
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--rope-theta", type=float, default=None, help="RoPE base (very large: close to no positions)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--heldout-per-level", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    easy = synthetic.generate(
        [*args.train_per_level, 0, 0], args.seed, "train", distinct=False, max_value=args.max_value, style=args.style
    )
    heldout = synthetic.generate(
        [args.heldout_per_level] * 5, args.seed + 1000, "recipe-heldout", max_value=args.max_value, style=args.style
    )
    rows = [{**row, "steps": row.get("steps") or formats.split_reference_solution(row["solution"])} for row in easy]
    tokenizer = modeling.train_tokenizer(
        [formats.format_prompt(r["problem"]) + formats.format_solution(r["steps"], r["answer"]) for r in rows],
        args.vocab,
    )
    shape = {
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_layers": args.layers,
        "num_heads": args.heads,
        "max_position_embeddings": 512,
    }
    model = modeling.build_tiny_llama(tokenizer, shape, args.seed)
    if args.rope_theta:  # rebuild with another RoPE base (the rotary tables are made at init)
        model.config.rope_parameters = {"rope_theta": args.rope_theta, "rope_type": "default"}
        torch.manual_seed(args.seed)
        model = type(model)(model.config)
    examples = [training.sft_example(r["problem"], r["steps"], r["answer"], tokenizer, 512) for r in rows]
    tokens = sum(len(e["input_ids"]) for e in examples)
    config = training.TrainConfig(
        learning_rate=args.lr,
        epochs=args.epochs,
        global_batch_size=args.batch,
        micro_batch_size=args.batch,
        max_length=512,
        warmup_ratio=0.05,
        deepspeed="never",
        log_every=10**9,
    )
    start = time.perf_counter()
    model, history = training.train(model, examples, config, tokenizer.pad_token_id)
    train_s = time.perf_counter() - start

    samples = sampling.sample_solutions(
        model.eval(),
        tokenizer,
        heldout,
        sampling.SamplingConfig(greedy=True, max_new_tokens=256, batch_size=256),
        progress=False,
    )
    answers = {row["unique_id"]: row["answer"] for row in heldout}
    correct = defaultdict(list)
    for sample in samples:
        correct[sample["level"]].append(formats.extract_answer(sample["completion"]) == answers[sample["unique_id"]])
    result = {
        "args": vars(args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": tokens,
        "train_s": round(train_s, 1),
        "tokens_per_s": round(tokens * args.epochs / train_s),
        "final_loss": round(history[-1]["loss"], 4),
        "greedy_accuracy": {level: round(100 * sum(v) / len(v), 1) for level, v in sorted(correct.items())},
    }
    if args.samples:
        per_question = defaultdict(list)
        config = sampling.SamplingConfig(
            num_samples=args.samples, temperature=0.7, top_k=20, max_new_tokens=256, batch_size=256
        )
        for sample in sampling.sample_solutions(model, tokenizer, heldout, config, progress=False):
            answer = formats.extract_answer(sample["completion"])
            per_question[(sample["level"], sample["unique_id"])].append(answer == answers[sample["unique_id"]])
        by_level = defaultdict(list)
        for (level, _), hits in per_question.items():
            by_level[level].append(hits)
        result["sample_accuracy"] = {
            level: round(100 * sum(map(sum, v)) / sum(map(len, v)), 1) for level, v in sorted(by_level.items())
        }
        result[f"pass@{args.samples}"] = {
            level: round(100 * sum(map(any, v)) / len(v), 1) for level, v in sorted(by_level.items())
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
