"""Sampling throughput: plain HF ``generate`` against easy2hard's sampling engine, in one run on
one device, on the sampling stage's workload (N samples per question, top-k 20, T 0.7).

    python bench/sample_throughput.py                          # GPU: TinyLlama-1.1B and SmolLM2-135M shapes, bf16
    python bench/sample_throughput.py --device cpu --shapes tiny --sequences 16 32 \\
        --samples-per-question 8 --prompt-len 16 --new-tokens 32 --bandwidth-tbs 0.02   # CPU-sized check

For each shape (a randomly initialised Llama) and each sequence count S, both variants sample
S sequences = S / N questions x N samples, prompts of about ``--prompt-len`` random tokens (75-100 %
of it, so batches need padding), exactly ``--new-tokens`` new tokens each (``min_new_tokens`` =
``max_new_tokens``: no early EOS, the same work for both):

* ``hf``: one ``model.generate(..., do_sample=True, num_return_sequences=N)`` call over all S
  sequences (what ``sampling.generate``'s hf path does with ``batch_size`` = S);
* ``engine``: ``SamplingEngine`` with S slots (prefix-shared prefill, slotted static cache,
  compiled CUDA-graph decode on CUDA);
* ``vllm`` (with ``--vllm``, when vLLM is installed): the same weights saved to a temporary folder and
  loaded by ``vllm.LLM`` (its CPU build on CPU), all prompts in one ``generate`` call with ``n=N``.
  Its model load (and engine start) time is printed separately and is not in its tokens/s.

Each variant runs once untimed (warm-up: allocator, kernels, torch.compile / CUDA graph capture),
then ``--repeats`` timed runs (best is reported). Printed: generated tokens/s, the ratio, and the
fraction of the memory-bandwidth roofline: every decode step must read the weights once
(all parameters except an untied input embedding, of which only S rows are gathered) plus every
row's KV cache so far, so at step t the bytes are P + S * (prompt + t) * kv_bytes_per_token;
roofline tokens/s = S * new_tokens / (sum over steps of bytes / bandwidth). ``--bandwidth-tbs``
is the device's peak (H100 SXM: 3.35 TB/s; give your CPU's figure on CPU).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

SHAPES = {  # Llama shapes (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings)
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000, False),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, True),
    "tiny": (128, 344, 4, 4, 2, 2048, True),
}
EOS, PAD, BOS = 2, 0, 1


def build_model(shape: str, dtype, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, intermediate, layers, heads, kv_heads, vocab, tied = SHAPES[shape]
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=tied,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def roofline(model, sequences: int, prompt_len: float, new_tokens: int, bandwidth: float) -> float:
    """Tokens/s if every decode step moved only the bytes it must read, at ``bandwidth`` B/s."""
    config = model.config
    params = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    weight_bytes = sum(params.values())
    if not config.tie_word_embeddings:
        embedding = model.get_input_embeddings().weight
        weight_bytes -= embedding.numel() * embedding.element_size()
    element = next(model.parameters()).element_size()
    head_dim = config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element
    seconds = sum(weight_bytes + sequences * (prompt_len + t) * kv_per_token for t in range(new_tokens)) / bandwidth
    return sequences * new_tokens / seconds


def make_prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [
        [BOS] + [rng.randrange(3, vocab) for _ in range(rng.randint(int(0.75 * length), length) - 1)]
        for _ in range(count)
    ]


def run_hf(model, prompts, samples: int, new_tokens: int) -> int:
    import torch

    from easy2hard.sampling import _left_pad

    batch = _left_pad(prompts, PAD, next(model.parameters()).device)
    with torch.inference_mode():
        output = model.generate(
            **batch,
            do_sample=True,
            temperature=0.7,
            top_k=20,
            num_return_sequences=samples,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )
    return (output.shape[1] - batch["input_ids"].shape[1]) * output.shape[0]


def run_engine(runner, prompts, samples: int, new_tokens: int) -> int:
    from easy2hard.engine import SamplingParams

    params = SamplingParams(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=EOS, temperature=0.7, top_k=20
    )
    return sum(len(tokens) for group in runner.run(prompts, samples, params, pad_token_id=PAD) for tokens in group)


def load_vllm(model, max_len: int, device):
    """vLLM on the same weights: saved to a temporary folder, no tokenizer (prompts are ids)."""
    import os
    import tempfile

    from vllm import LLM

    folder = tempfile.mkdtemp(prefix="bench-vllm-")
    model.save_pretrained(folder)
    cpu = {} if device.type == "cuda" else {"enable_chunked_prefill": False, "max_num_batched_tokens": 16384}
    if device.type != "cuda":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    start = time.perf_counter()
    llm = LLM(
        model=folder,
        skip_tokenizer_init=True,
        dtype=str(model.dtype).removeprefix("torch."),
        seed=0,
        max_model_len=max_len,
        enable_prefix_caching=True,
        generation_config="vllm",
        **cpu,
    )
    return llm, time.perf_counter() - start


def run_vllm(llm, prompts, samples: int, new_tokens: int) -> int:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(
        n=samples,
        temperature=0.7,
        top_k=20,
        max_tokens=new_tokens,
        min_tokens=new_tokens,
        ignore_eos=True,
        detokenize=False,
    )
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return sum(len(sample.token_ids) for output in outputs for sample in output.outputs)


def timed(fn, device, repeats: int) -> tuple[float, int]:
    import torch

    fn()  # warm-up
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, tokens


def main():
    import torch

    from easy2hard.engine import EngineOptions, SamplingEngine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES))
    parser.add_argument("--sequences", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--samples-per-question", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="peak memory bandwidth, TB/s (H100: 3.35)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs)")
    parser.add_argument("--no-compile", action="store_true", help="engine without torch.compile / CUDA graphs")
    parser.add_argument("--vllm", action="store_true", help="also vLLM on the same weights (load time printed apart)")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    shapes = args.shapes or (["tinyllama-1.1b", "smollm2-135m"] if device.type == "cuda" else ["tiny"])
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    bandwidth = args.bandwidth_tbs * 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name} | dtype {str(dtype).removeprefix('torch.')} | {args.samples_per_question} samples/question | "
        f"prompts ~{args.prompt_len} tokens | {args.new_tokens} new tokens | roofline at {args.bandwidth_tbs} TB/s | "
        f"torch {torch.__version__}"
    )
    header = (
        f"{'shape':<16}{'seqs':>6}{'hf tok/s':>12}{'engine tok/s':>14}{'ratio':>8}{'hf %roof':>10}{'eng %roof':>11}"
        "  engine"
    )
    print(header)
    print("-" * len(header))
    for shape in shapes:
        model = build_model(shape, dtype, device)
        vocab, llm = model.config.vocab_size, None
        for sequences in args.sequences:
            samples = min(args.samples_per_question, sequences)
            prompts = make_prompts(sequences // samples, args.prompt_len, vocab, seed=sequences)
            mean_prompt = sum(map(len, prompts)) / len(prompts)
            hf_seconds, hf_tokens = timed(
                lambda: run_hf(model, prompts, samples, args.new_tokens), device, args.repeats
            )
            runner = SamplingEngine(
                model, EngineOptions(num_slots=sequences, compile=False if args.no_compile else None)
            )
            engine_seconds, engine_tokens = timed(
                lambda: run_engine(runner, prompts, samples, args.new_tokens), device, args.repeats
            )
            expected = len(prompts) * samples * args.new_tokens
            assert hf_tokens == engine_tokens == expected, (hf_tokens, engine_tokens, expected)
            roof = roofline(model, len(prompts) * samples, mean_prompt, args.new_tokens, bandwidth)
            hf_rate, engine_rate = hf_tokens / hf_seconds, engine_tokens / engine_seconds
            stats = runner.stats
            detail = (
                f"compile={'on' if runner.compile else 'off'} prefilled {stats.prefilled_prompts}/{len(prompts)}"
                f" prompts, slot use {stats.utilization:.0%}"
            )
            print(
                f"{shape:<16}{sequences:>6}{hf_rate:>12,.0f}{engine_rate:>14,.0f}{engine_rate / hf_rate:>7.2f}x"
                f"{hf_rate / roof:>10.1%}{engine_rate / roof:>11.1%}  {detail}",
                flush=True,
            )
            if args.vllm:
                if llm is None:
                    llm, load_seconds = load_vllm(model, args.prompt_len + args.new_tokens + 8, device)
                vllm_seconds, vllm_tokens = timed(
                    lambda: run_vllm(llm, prompts, samples, args.new_tokens), device, args.repeats
                )
                assert vllm_tokens == expected, (vllm_tokens, expected)
                vllm_rate = vllm_tokens / vllm_seconds
                print(
                    f"{'':<16}{'':>6}  vllm {vllm_rate:,.0f} tok/s ({vllm_rate / hf_rate:.2f}x hf, "
                    f"{vllm_rate / engine_rate:.2f}x engine, {vllm_rate / roof:.1%} roof);"
                    f" model load {load_seconds:.1f} s",
                    flush=True,
                )
        model = llm = None  # free this shape's memory before the next one is built
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
