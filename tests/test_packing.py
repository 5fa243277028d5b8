"""Sequence packing: the same loss and gradients as padding, with attention kept per example."""

import pytest
import torch

from easy2hard import evaluator, formats, modeling, synthetic, training


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    train, _ = synthetic.generate_splits(60, 10, 0)
    texts = [formats.format_prompt(r["problem"]) + r["solution"] for r in train]
    tokenizer = modeling.train_tokenizer(texts, 400)
    shape = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "max_position_embeddings": 512,
    }
    model = modeling.build_tiny_llama(tokenizer, shape, seed=0).eval()
    rows = []
    for row in train[:12]:
        steps = formats.split_reference_solution(row["solution"])
        rows.append((row["problem"], steps, row["answer"]))
    yield tokenizer, model, rows


def test_pack_layout(setup):
    tokenizer, _, rows = setup
    examples = [training.sft_example(p, s, a, tokenizer, 512) for p, s, a in rows[:5]]
    batch = training.pack(examples, tokenizer.pad_token_id, max_length=400)
    total = sum(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape[1] <= 400
    assert int((batch["input_ids"] != tokenizer.pad_token_id).sum()) == total
    assert "attention_mask" not in batch
    # positions restart at 0 once per example
    assert int((batch["position_ids"] == 0).sum()) == len(examples)
    # every target token of every example survives, none added
    assert int((batch["labels"] != training.IGNORE_INDEX).sum()) == sum(
        sum(label != training.IGNORE_INDEX for label in e["labels"]) for e in examples
    )


def test_packed_causal_lm_loss_equals_padded(setup):
    tokenizer, model, rows = setup
    examples = [training.sft_example(p, s, a, tokenizer, 512) for p, s, a in rows[:6]]
    padded = training.collate(examples, tokenizer.pad_token_id)
    packed = training.pack(examples, tokenizer.pad_token_id, max_length=512)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    loss_padded = training.causal_lm_loss(model, padded)
    loss_packed = training.causal_lm_loss(model, packed)
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-5)


def test_packed_evaluator_loss_equals_padded(setup, tmp_path):
    tokenizer, model, rows = setup
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward_model, _ = evaluator.load_backbone(str(tmp_path))
    reward_model.eval()
    examples = []
    for index, (problem, steps, answer) in enumerate(rows[:6]):
        labels = [float(index % 2)] * len(steps) + [1.0]
        row = {
            "unique_id": str(index),
            "problem": problem,
            "steps": steps,
            "answer": answer,
            "labels": labels,
            "kind": "prm",
        }
        examples.append(evaluator.training_example(row, tokenizer, 512, "all"))
    padded = training.collate(examples, tokenizer.pad_token_id)
    packed = training.pack(examples, tokenizer.pad_token_id, max_length=512)
    assert packed["labels"].dtype == torch.float32
    assert evaluator.bce_loss(reward_model, packed).item() == pytest.approx(
        evaluator.bce_loss(reward_model, padded).item(), rel=1e-5
    )


def test_packed_training_matches_padded_training(setup):
    tokenizer, model, rows = setup
    examples = [training.sft_example(p, s, a, tokenizer, 512) for p, s, a in rows]
    results = []
    for packing in (False, True):
        copy = modeling.build_tiny_llama(
            tokenizer,
            {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_layers": 2,
                "num_heads": 2,
                "max_position_embeddings": 512,
            },
            seed=0,
        )
        config = training.TrainConfig(
            learning_rate=1e-3,
            epochs=1,
            global_batch_size=6,
            micro_batch_size=3,
            max_length=512,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            deepspeed="never",
            packing=packing,
            seed=0,
        )
        module, history = training.train(copy, examples, config, tokenizer.pad_token_id)
        results.append((module, history))
    (padded, h_padded), (packed, h_packed) = results
    assert [r["loss"] for r in h_packed] == pytest.approx([r["loss"] for r in h_padded], rel=1e-4)
    for a, b in zip(padded.parameters(), packed.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
