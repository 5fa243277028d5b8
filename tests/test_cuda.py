"""The GPU path, on a CUDA device (marker `cuda`; skipped without one): the engine's compiled
CUDA-graph decode against `generate`, its sampling distribution, one SFT and one reward-model step
under DeepSpeed ZeRO-2 in bf16, packing against padding in bf16 with SDPA, evaluator scoring.
`tools/gpu_check.py` runs these first (`make gpu-check`)."""

import copy

import pytest
import torch
from test_engine import assert_matches, by_hand, data, next_logits, peaky_model, prompts, questions, tokenizer  # noqa: F401

from conftest import TINY_SHAPE, run_deepspeed_script
from easy2hard import evaluator, formats, modeling, synthetic, training
from easy2hard.engine import EngineOptions, SamplingEngine, SamplingParams

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = torch.device("cuda")


def cuda_greedy(model, prompt: list[int], max_new_tokens: int, eos: int) -> list[int]:
    ids = torch.tensor([prompt], device=CUDA)
    with torch.no_grad():
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    tokens = output[0, len(prompt) :].tolist()
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def test_compiled_engine_greedy_equals_generate(trained_model, tokenizer, prompts):
    model = copy.deepcopy(trained_model).to(CUDA)  # fp32: the comparison is exact, not bf16-close
    eos = tokenizer.eos_token_id
    expected = [cuda_greedy(model, p, 40, eos) for p in prompts]
    runner = SamplingEngine(model, EngineOptions(num_slots=4, slack=2, sync_every=3, refill_min_free=1))
    assert runner.compile  # on by default on CUDA: Inductor + CUDA graphs
    groups = list(
        runner.run(
            prompts,
            3,
            SamplingParams(max_new_tokens=40, eos_token_id=eos, greedy=True),
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    assert groups == [[reference] * 3 for reference in expected]
    assert runner.stats.refills > 1 and runner.stats.compactions > 0


def test_sampled_tokens_follow_softmax_of_top_k_on_cuda(peaky_model):
    prompt, temperature, top_k, n = [1, 7, 30, 11, 5, 19], 0.7, 20, 6000
    params = SamplingParams(max_new_tokens=1, eos_token_id=None, temperature=temperature, top_k=top_k, seed=123)
    runner = SamplingEngine(copy.deepcopy(peaky_model).to(CUDA), EngineOptions(num_slots=512))
    (group,) = list(runner.run([prompt], n, params, pad_token_id=0))
    counts = torch.bincount(torch.tensor([t[0] for t in group]), minlength=peaky_model.config.vocab_size)
    assert_matches(counts, by_hand(next_logits(peaky_model, prompt), temperature, top_k))


DEEPSPEED_STEP = """
rows = [(r["problem"], formats.split_reference_solution(r["solution"]), r["answer"]) for r in train]
cfg = training.TrainConfig(learning_rate=1e-3, epochs=1, global_batch_size=8, micro_batch_size=8, max_length=512,
                           warmup_ratio=0.0, deepspeed="always", zero_stage=2, seed=0)
assert training.deepspeed_config(cfg, 1)["bf16"]["enabled"]
sft = [training.sft_example(p, s, a, tok, 512) for p, s, a in rows][:8]
model = modeling.build_tiny_llama(tok, {shape!r}, 0)
before = {{k: v.clone() for k, v in model.state_dict().items()}}
module, history = training.train(model, sft, cfg, tok.pad_token_id)
assert type(module).__name__ == "LlamaForCausalLM" and next(module.parameters()).is_cuda
changed = any((before[k] - v.cpu()).abs().max() > 0 for k, v in module.state_dict().items())
modeling.build_tiny_llama(tok, {shape!r}, 0).save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])
rm, _ = evaluator.load_backbone(sys.argv[1])
labelled = [{{"problem": p, "steps": s, "answer": a, "labels": [1.0] * len(s) + [0.0]}} for p, s, a in rows[:8]]
rm_examples = [evaluator.training_example(row, tok, 512, "all") for row in labelled]
_, rm_history = training.train(rm, rm_examples, cfg, tok.pad_token_id, loss_fn=evaluator.bce_loss)
print("RESULT", history[-1]["loss"], rm_history[-1]["loss"], changed)
"""


@pytest.mark.skipif(__import__("importlib").util.find_spec("deepspeed") is None, reason="deepspeed not installed")
def test_one_sft_and_one_reward_model_step_under_deepspeed_zero2_bf16(tmp_path):
    result = run_deepspeed_script(DEEPSPEED_STEP, tmp_path, str(tmp_path / "backbone"), shape=TINY_SHAPE)
    assert result.returncode == 0, result.stderr[-3000:]
    sft_loss, rm_loss, changed = result.stdout.split("RESULT")[1].split()
    assert torch.isfinite(torch.tensor([float(sft_loss), float(rm_loss)])).all() and changed == "True"


def test_packed_loss_equals_padded_in_bf16_with_sdpa():
    train, _ = synthetic.generate_splits(60, 10, 0)
    tok = modeling.train_tokenizer([formats.format_prompt(r["problem"]) + r["solution"] for r in train], 400)
    model = (
        modeling.build_tiny_llama(tok, {**TINY_SHAPE, "max_position_embeddings": 512}, 0)
        .to(CUDA, torch.bfloat16)
        .eval()
    )
    model.set_attn_implementation("sdpa")
    examples = [
        training.sft_example(r["problem"], formats.split_reference_solution(r["solution"]), r["answer"], tok, 512)
        for r in train[:6]
    ]
    padded = {k: v.to(CUDA) for k, v in training.collate(examples, tok.pad_token_id).items()}
    packed = {k: v.to(CUDA) for k, v in training.pack(examples, tok.pad_token_id, max_length=512).items()}
    with torch.no_grad():
        loss_padded = training.causal_lm_loss(model, padded).item()
        loss_packed = training.causal_lm_loss(model, packed).item()
    assert loss_packed == pytest.approx(loss_padded, rel=2e-2)  # bf16: ~3 significant digits


def test_evaluator_scores_on_cuda_match_cpu(trained_model, tokenizer, tmp_path, data):
    trained_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    rows, _ = data
    solutions = [
        {"problem": r["problem"], "completion": formats.format_solution(r["steps"], r["answer"])} for r in rows[:16]
    ]
    cpu_model, tok = evaluator.load_backbone(str(tmp_path))
    torch.manual_seed(0)
    cpu_scores = evaluator.score_solutions(cpu_model.eval(), tok, solutions, batch_size=8)
    cuda_model, _ = evaluator.load_backbone(str(tmp_path), dtype=torch.bfloat16)
    cuda_model.score.load_state_dict(cpu_model.score.state_dict())  # the same (new) head on both
    cuda_scores = evaluator.score_solutions(cuda_model.to(CUDA).eval(), tok, solutions, batch_size=8)
    for on_cpu, on_cuda in zip(cpu_scores, cuda_scores):
        assert on_cuda == pytest.approx(on_cpu, abs=2e-2)
