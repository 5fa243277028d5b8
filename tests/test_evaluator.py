"""Evaluators: score positions (one per step and answer), token labels, the BCE loss, the scalar
head on a tiny Llama, training with the shared loop, and scoring in input order."""

import copy
import math

import pytest
import torch

from conftest import TINY_SHAPE
from easy2hard import evaluator, formats, modeling, sampling, synthetic, training
from easy2hard.evaluator import AlignmentError
from easy2hard.training import IGNORE_INDEX

TINY = TINY_SHAPE


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    train, test = synthetic.generate_splits(100, 10, 0)
    return [{**r, "steps": formats.split_reference_solution(r["solution"])} for r in train + test]


@pytest.fixture(scope="module")
def tokenizer(rows):
    texts = [formats.format_prompt(r["problem"]) + formats.format_solution(r["steps"], r["answer"]) for r in rows]
    return modeling.train_tokenizer(texts, 400)


@pytest.fixture(scope="module", params=["split", "merged"])
def separator_tokenizer(request, tokenizer):
    """The tiny tokenizer splits "\n\n" into two tokens; the same one with "\n\n" as a single token
    stands in for tokenizers that merge it (Llama's splits it, GPT-2-style BPEs merge it)."""
    if request.param == "split":
        assert len(tokenizer.tokenize("a." + formats.STEP_SEPARATOR + "b")) == 5
        return tokenizer
    merged = copy.deepcopy(tokenizer)
    merged.add_tokens([formats.STEP_SEPARATOR])
    assert len(merged.tokenize("a." + formats.STEP_SEPARATOR + "b")) == 4
    return merged


@pytest.fixture(scope="module")
def policy_dir(tokenizer, tmp_path_factory):
    """A saved tiny causal-LM 'policy' folder, as the SFT rule leaves it."""
    folder = tmp_path_factory.mktemp("policy")
    modeling.build_tiny_llama(tokenizer, TINY, 0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backbone(policy_dir):
    model, tokenizer = evaluator.load_backbone(str(policy_dir))
    model.eval()
    return model, tokenizer


def solutions(rows, count=6):
    """(problem, steps, answer) triples, with and without an answer section."""
    cases = []
    for i, row in enumerate(rows[:count]):
        cases.append((row["problem"], row["steps"], row["answer"] if i % 2 == 0 else None))
    return cases


# --- render -------------------------------------------------------------------------------------------


def test_render_positions_on_newlines_and_eos(tokenizer, rows):
    for problem, steps, answer in solutions(rows, 10):
        rendered = evaluator.render(tokenizer, problem, steps, answer)
        ids, positions, start = rendered.input_ids, rendered.positions, rendered.solution_start
        assert len(positions) == len(steps) + (answer is not None)
        assert ids[:start] == sampling.encode_prompt(tokenizer, problem)
        assert start < positions[0]
        assert all(b > a for a, b in zip(positions, positions[1:]))
        assert positions[-1] < len(ids)
        text = evaluator.solution_text(steps, answer)
        assert tokenizer.decode(ids[start:], skip_special_tokens=True) == text
        for i, position in enumerate(positions[: len(steps)]):
            assert "\n" in tokenizer.decode([ids[position]])
            # Everything before the score token is exactly steps 1..i (the newline is the score token).
            before = tokenizer.decode(ids[start:position])
            assert before == formats.STEP_SEPARATOR.join(formats.normalize_step(s) for s in steps[: i + 1])
        if answer is not None:
            assert positions[-1] == len(ids) - 1
            assert ids[positions[-1]] == tokenizer.eos_token_id
            assert tokenizer.decode(ids[positions[-2] + 1 : -1]).strip() == formats.ANSWER_HEADER + "\n\n" + answer
        else:
            assert tokenizer.eos_token_id not in ids[start:]
            # The last step's score sits on the trailing separator, and only newlines follow.
            assert set(tokenizer.decode(ids[positions[-1] :])) == {"\n"}
            body = formats.STEP_SEPARATOR.join(formats.normalize_step(s) for s in steps)
            assert tokenizer.decode(ids[start:]) == body + formats.STEP_SEPARATOR


def test_render_steps_with_inner_newlines_and_whitespace(tokenizer):
    steps = ["  We add.\nThen $1 + 1 = 2$.  ", "Two lines\n\n\nbecome one step.", "Done."]
    rendered = evaluator.render(tokenizer, "Compute $1 + 1$.", steps, " 2 ")
    ids, start = rendered.input_ids, rendered.solution_start
    assert len(rendered.positions) == 4
    assert tokenizer.decode(ids[start : rendered.positions[0]]) == "We add.\nThen $1 + 1 = 2$."
    assert tokenizer.decode(ids[start : rendered.positions[1]]).endswith("Two lines\nbecome one step.")
    assert tokenizer.decode(ids[start : rendered.positions[2]]).endswith("\n\nDone.")
    assert tokenizer.decode(ids[start:], skip_special_tokens=True).endswith("Done.\n\n# Answer\n\n2")


def test_render_answer_only(tokenizer):
    rendered = evaluator.render(tokenizer, "Compute $1 + 1$.", [], "2")
    assert rendered.positions == [len(rendered.input_ids) - 1]
    assert rendered.input_ids[-1] == tokenizer.eos_token_id


class OffsetsWrapper:
    """A tokenizer whose offset mapping is rewritten -- a stand-in for tokenizers whose offsets
    do not line up with the text (the classic source of silently unlabelled PRM data)."""

    def __init__(self, tokenizer, offsets):
        self._tokenizer, self._offsets = tokenizer, offsets

    def __call__(self, text, **kwargs):
        encoded = self._tokenizer(text, **kwargs)
        if kwargs.get("return_offsets_mapping"):
            encoded["offset_mapping"] = [self._offsets for _ in encoded["input_ids"]]
        return encoded

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.mark.parametrize("offsets", [(0, 0), (0, 10**6)], ids=["never-covers", "all-one-token"])
def test_render_raises_when_offsets_do_not_cover_the_newlines(tokenizer, rows, offsets):
    row = next(r for r in rows if len(r["steps"]) >= 2)
    problem, steps, answer = row["problem"], row["steps"], row["answer"]
    evaluator.render(tokenizer, problem, steps, answer)  # the real offsets line up
    with pytest.raises(AlignmentError, match="scoring units"):
        evaluator.render(OffsetsWrapper(tokenizer, offsets), problem, steps, answer)
    example = {
        "unique_id": "q",
        "problem": problem,
        "steps": steps,
        "answer": None,
        "labels": [1.0] * len(steps),
        "kind": "prm",
    }
    with pytest.raises(AlignmentError):
        evaluator.training_example(example, OffsetsWrapper(tokenizer, offsets), 256, "all")


def prm_example(row, labels, answer=True, kind="prm"):
    return {
        "unique_id": row["unique_id"],
        "problem": row["problem"],
        "steps": row["steps"],
        "answer": row["answer"] if answer else None,
        "labels": labels,
        "kind": kind,
    }


def test_training_example_rejects_wrong_label_count(tokenizer, rows):
    row = rows[4]
    units = len(row["steps"]) + 1
    for labels in ([1.0] * (units - 1), [1.0] * (units + 1), []):
        with pytest.raises(AlignmentError, match=f"{len(labels)} labels for {units} scoring units"):
            evaluator.training_example(prm_example(row, labels), tokenizer, 256, "all")


# --- training_example ---------------------------------------------------------------------------------


def labelled_runs(labels):
    """Maximal runs of equal, labelled values: [(start, end_inclusive, value)]."""
    runs = []
    for index, value in enumerate(labels):
        if value == IGNORE_INDEX:
            continue
        if runs and runs[-1][1] == index - 1 and runs[-1][2] == value:
            runs[-1] = (runs[-1][0], index, value)
        else:
            runs.append((index, index, value))
    return runs


def test_training_example_all_labels_whole_units(tokenizer, rows):
    row = next(r for r in rows if len(r["steps"]) >= 3)
    units = len(row["steps"]) + 1
    # Prefix unit unlabelled, then alternating labels (so adjacent units never merge into one run).
    labels = [None] + [float(i % 2) for i in range(1, units)]
    example = evaluator.training_example(prm_example(row, labels), tokenizer, 256, "all")
    rendered = evaluator.render(tokenizer, row["problem"], row["steps"], row["answer"])
    assert example["input_ids"] == rendered.input_ids
    token_labels = example["labels"]
    assert len(token_labels) == len(rendered.input_ids)
    # Prompt and the unlabelled first step carry no label.
    assert all(v == IGNORE_INDEX for v in token_labels[: rendered.unit_ends[0] + 1])
    runs = labelled_runs(token_labels)
    assert len(runs) == units - 1
    for unit, (first, last, value) in zip(range(1, units), runs):
        assert last == rendered.unit_ends[unit]  # the run ends with the unit's separator (or EOS)
        assert first == rendered.unit_ends[unit - 1] + 1  # and starts right after the previous one
        assert value == labels[unit]
        span = tokenizer.decode(rendered.input_ids[first : last + 1], skip_special_tokens=True)
        unit_text = row["steps"][unit] if unit < len(row["steps"]) else row["answer"]
        assert formats.normalize_step(unit_text) in span


def test_training_example_all_orm_labels_the_whole_solution(tokenizer, rows):
    row = rows[2]
    units = len(row["steps"]) + 1
    example = evaluator.training_example(prm_example(row, [0.0] * units, kind="orm"), tokenizer, 256, "all")
    start = len(sampling.encode_prompt(tokenizer, row["problem"]))
    assert all(v == IGNORE_INDEX for v in example["labels"][:start])
    assert all(v == 0.0 for v in example["labels"][start:])


@pytest.mark.parametrize("answer", [True, False])
def test_training_example_step_end(tokenizer, rows, answer):
    row = next(r for r in rows if len(r["steps"]) >= 3)
    units = len(row["steps"]) + answer
    labels = [None] + [0.25 * (i % 5) for i in range(1, units)]
    example = evaluator.training_example(prm_example(row, labels, answer=answer), tokenizer, 256, "step_end")
    rendered = evaluator.render(tokenizer, row["problem"], row["steps"], row["answer"] if answer else None)
    labelled = {i: v for i, v in enumerate(example["labels"]) if v != IGNORE_INDEX}
    assert labelled == {
        i: labels[u] for u in range(1, units) for i in range(rendered.positions[u], rendered.unit_ends[u] + 1)
    }


@pytest.mark.parametrize("label_tokens", ["all", "step_end"])
def test_both_separator_newlines_carry_the_label_of_the_step_they_end(separator_tokenizer, rows, label_tokens):
    """With "\n\n" split into two tokens, the second newline cannot see the next step: it belongs
    to the step it ends. Merged or split, no token of the next unit carries a previous label."""
    tok = separator_tokenizer
    row = next(r for r in rows if len(r["steps"]) >= 3)
    units = len(row["steps"]) + 1
    labels = [float(i % 2) for i in range(units)]  # alternating: a leaked label is visible
    example = evaluator.training_example(prm_example(row, labels), tok, 256, label_tokens)
    rendered = evaluator.render(tok, row["problem"], row["steps"], row["answer"])
    ids, token_labels = rendered.input_ids, example["labels"]
    for unit in range(len(row["steps"])):
        position, end = rendered.positions[unit], rendered.unit_ends[unit]
        assert tok.decode(ids[position : end + 1]) == formats.STEP_SEPARATOR  # both newlines, nothing more
        assert token_labels[position : end + 1] == [labels[unit]] * (end + 1 - position)
        assert "\n" not in tok.decode(ids[end + 1 : end + 2])  # the next unit starts on its own text
        if label_tokens == "all":
            assert token_labels[end + 1] == labels[unit + 1]


@pytest.mark.parametrize("answer", [True, False])
def test_training_example_step_end_orm_only_the_final_position(tokenizer, rows, answer):
    row = rows[3]
    units = len(row["steps"]) + answer
    example = evaluator.training_example(
        prm_example(row, [1.0] * units, answer=answer, kind="orm"), tokenizer, 256, "step_end"
    )
    labelled = {i: v for i, v in enumerate(example["labels"]) if v != IGNORE_INDEX}
    rendered = evaluator.render(tokenizer, row["problem"], row["steps"], row["answer"] if answer else None)
    assert labelled == {rendered.positions[-1]: 1.0}
    if answer:
        assert example["input_ids"][rendered.positions[-1]] == tokenizer.eos_token_id


def test_training_example_too_long_and_unknown_mode(tokenizer, rows):
    row = rows[5]
    example = prm_example(row, [1.0] * (len(row["steps"]) + 1))
    length = len(evaluator.render(tokenizer, row["problem"], row["steps"], row["answer"]).input_ids)
    assert evaluator.training_example(example, tokenizer, length - 1, "all") is None
    assert len(evaluator.training_example(example, tokenizer, length, "all")["input_ids"]) == length
    with pytest.raises(ValueError, match="unknown label_tokens"):
        evaluator.training_example(example, tokenizer, 256, "every")


# --- collate and the loss ----------------------------------------------------------------------------


def test_collate_pads_with_ignore_label():
    batch = training.collate(
        [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 1.0, 0.5]}, {"input_ids": [8], "labels": [0.0]}],
        pad_token_id=2,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[-100.0, 1.0, 0.5], [0.0, -100.0, -100.0]]
    unlabelled = training.collate([{"input_ids": [1, 2]}, {"input_ids": [3]}], pad_token_id=0)
    assert set(unlabelled) == {"input_ids", "attention_mask"}


class FixedLogits:
    def __init__(self, logits):
        self.logits = torch.tensor(logits)[..., None]
        self.calls = []

    def __call__(self, input_ids, attention_mask, use_cache=None):
        self.calls.append((input_ids, attention_mask))
        return type("Output", (), {"logits": self.logits})()


def test_bce_loss_by_hand():
    logits = [[0.5, -1.0, 2.0, 7.0], [-0.3, 1.5, 9.0, -9.0]]
    labels = [[IGNORE_INDEX, 1.0, 0.0, IGNORE_INDEX], [0.25, 1.0, IGNORE_INDEX, IGNORE_INDEX]]
    batch = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
        "labels": torch.tensor(labels),
    }
    model = FixedLogits(logits)
    loss = evaluator.bce_loss(model, batch)

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    terms = [
        -math.log(sigmoid(x)) * y - math.log(1 - sigmoid(x)) * (1 - y)
        for row_x, row_y in zip(logits, labels)
        for x, y in zip(row_x, row_y)
        if y != IGNORE_INDEX
    ]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    assert len(model.calls) == 1


# --- the backbone, training, scoring ---------------------------------------------------------------


def test_load_backbone_gives_one_output_per_token(backbone, policy_dir):
    model, tokenizer = backbone
    assert model.config.num_labels == 1
    assert "TokenClassification" in type(model).__name__
    assert tokenizer.pad_token_id is not None and model.config.pad_token_id == tokenizer.pad_token_id
    ids = torch.tensor([[tokenizer.bos_token_id, 10, 11, 12, 13]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 5, 1)
    # The backbone is the policy's: its body weights are those saved in the policy folder.
    policy, _ = modeling.load_model(str(policy_dir))
    assert torch.equal(model.model.embed_tokens.weight, policy.model.embed_tokens.weight)


def toy_examples(rows, tokenizer, count=16):
    """Label 1 when a solution's one step ends in "1." and 0 when it ends in "0."."""
    examples = []
    for i, row in enumerate(rows[:count]):
        flag = i % 2
        example = {
            "unique_id": str(i),
            "problem": row["problem"],
            "steps": [f"The check gives {flag}."],
            "answer": None,
            "labels": [float(flag)],
            "kind": "prm",
        }
        examples.append(evaluator.training_example(example, tokenizer, 256, "step_end"))
    return examples


def dataset_loss(model, examples, pad_token_id):
    with torch.no_grad():
        return evaluator.bce_loss(model, training.collate(examples, pad_token_id)).item()


def test_training_lowers_the_loss(policy_dir, rows):
    model, tokenizer = evaluator.load_backbone(str(policy_dir))
    examples = toy_examples(rows, tokenizer)
    model.eval()
    before = dataset_loss(model, examples, tokenizer.pad_token_id)
    config = training.TrainConfig(
        learning_rate=1e-2,
        epochs=15,
        global_batch_size=8,
        micro_batch_size=8,
        max_length=256,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        deepspeed="never",
        seed=0,
    )
    module, history = training.train(model, examples, config, tokenizer.pad_token_id, loss_fn=evaluator.bce_loss)
    after = dataset_loss(module, examples, tokenizer.pad_token_id)
    assert len(history) == 30
    assert after < 0.25 * before  # ~0.69 -> ~0.01: the step-end label is learnt
    assert history[-1]["loss"] < history[0]["loss"]


def test_identical_solutions_are_scored_once(backbone, rows):
    model, tokenizer = backbone
    same = {"problem": rows[0]["problem"], "completion": "We compute $1 + 2 = 3$.\n\n# Answer\n\n3"}
    other = {"problem": rows[1]["problem"], "completion": same["completion"]}  # another problem: scored apart
    unfinished = {**same, "finished": False}  # truncated: rendered without EOS, scored apart
    calls = []
    original = model.forward

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.forward = counting_forward
    try:
        scores = evaluator.score_solutions(model, tokenizer, [same, other, same, unfinished, same], batch_size=8)
    finally:
        del model.forward
    assert calls == [3]  # three distinct solutions in one batch
    assert scores[0] == scores[2] == scores[4] and scores[0] is not scores[2]
    assert scores[0] != scores[1]
    assert scores == evaluator.score_solutions(model, tokenizer, [same, other, same, unfinished, same], batch_size=1)


def test_length_batches_cap_rows_and_padded_tokens():
    lengths = [100, 900, 120, 110, 95, 400]
    assert evaluator.length_batches(lengths, batch_size=2) == [[1, 5], [2, 3], [0, 4]]
    # 900 goes alone (2 x 900 > 1000); 400 takes two (2 x 400 <= 1000, 3 x 400 > 1000); then 4 rows of ~100
    assert evaluator.length_batches(lengths, batch_size=8, max_tokens=1000) == [[1], [5, 2], [3, 0, 4]]
    assert evaluator.length_batches([2000], batch_size=8, max_tokens=1000) == [[0]]  # too long: alone, not dropped
    assert sorted(i for b in evaluator.length_batches(lengths, 3, 500) for i in b) == list(range(len(lengths)))


def test_score_solutions_in_input_order(backbone, rows):
    model, tokenizer = backbone
    problems = [rows[i]["problem"] for i in (0, 7, 3, 12, 5)]
    completions = [
        "We start.\n\n# Answer\n\n3",
        "We compute $1 + 2 = 3$.\n\nWe compute $3 + 4 = 7$.\n\nWe compute $7 - 1 = 6$.\n\n# Answer\n\n6",
        "Only a step, no answer.",
        formats.format_solution(rows[12]["steps"], rows[12]["answer"]),
        "One.\n\nTwo.",
    ]
    solutions = [{"problem": p, "completion": c} for p, c in zip(problems, completions)]
    scores = evaluator.score_solutions(model, tokenizer, solutions, batch_size=2)
    assert len(scores) == len(solutions)
    capped = evaluator.score_solutions(model, tokenizer, solutions, batch_size=4, max_tokens=120)
    assert [c == pytest.approx(s, abs=1e-5) for c, s in zip(capped, scores)] == [True] * len(scores)
    for solution, unit_scores in zip(solutions, scores):
        steps, answer = formats.parse_solution(solution["completion"])
        assert len(unit_scores) == len(steps) + (answer is not None)
        assert all(0.0 < s < 1.0 for s in unit_scores)
        alone = evaluator.score_solutions(model, tokenizer, [solution], batch_size=1)[0]
        assert unit_scores == pytest.approx(alone, abs=1e-5)
        rendered = evaluator.render(tokenizer, solution["problem"], steps, answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([rendered.input_ids])).logits[0, :, 0]
        assert unit_scores == pytest.approx(torch.sigmoid(logits[rendered.positions]).tolist(), abs=1e-5)
    # Different solutions do score differently (so an order mix-up could not pass unnoticed).
    assert len({round(s[0], 6) for s in scores}) == len(scores)


def test_bce_loss_without_labelled_tokens_is_zero_not_nan():
    class Constant(torch.nn.Module):
        def forward(self, input_ids, attention_mask, use_cache=None):
            class Out:
                logits = torch.ones(input_ids.shape + (1,), requires_grad=True)

            return Out()

    batch = {
        "input_ids": torch.zeros(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "labels": torch.full((2, 3), float(IGNORE_INDEX)),
    }
    loss = evaluator.bce_loss(Constant(), batch)
    assert loss.item() == 0.0 and loss.requires_grad


def test_bf16_backbone_keeps_an_fp32_head(policy_dir):
    model, _ = evaluator.load_backbone(str(policy_dir), dtype=torch.bfloat16)
    assert model.score.weight.dtype == torch.float32
    assert next(model.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.dtype == torch.float32


def test_truncated_answer_is_read_at_its_last_token_not_an_eos(tokenizer):
    finished = evaluator.render(tokenizer, "Compute $1+1$.", ["We add."], "2")
    cut = evaluator.render(tokenizer, "Compute $1+1$.", ["We add."], "2", finished=False)
    assert finished.input_ids[-1] == tokenizer.eos_token_id and finished.positions[-1] == len(finished.input_ids) - 1
    assert tokenizer.eos_token_id not in cut.input_ids[cut.solution_start :]
    assert cut.positions[-1] == len(cut.input_ids) - 1 and cut.positions[0] == finished.positions[0]
