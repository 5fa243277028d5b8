"""Sampling N solutions per question: row layout, EOS handling, seeding, greedy decoding with left
padding, and the exact prompt the policy sees -- through HF `generate` (the sampling engine,
which `auto` picks for these models, has its own tests in test_engine.py)."""

import copy

import pytest
import torch

from conftest import TINY_SHAPE
from easy2hard import formats, modeling, training
from easy2hard.sampling import SamplingConfig, sample_solutions

TINY = TINY_SHAPE


@pytest.fixture(autouse=True)
def generate_back_end(monkeypatch):
    monkeypatch.setenv("EASY2HARD_SAMPLING_ENGINE", "hf")


@pytest.fixture(scope="module")
def data(synthetic_split):
    return synthetic_split


@pytest.fixture(scope="module")
def tokenizer(synthetic_tokenizer):
    return synthetic_tokenizer


@pytest.fixture(scope="module")
def random_model(tokenizer):
    return modeling.build_tiny_llama(tokenizer, TINY, seed=0).eval()


@pytest.fixture(scope="module")
def questions(data):
    _, test = data
    # Different levels give prompts of different lengths, so batches need padding.
    chosen = [test[0], test[9], test[3], test[8], test[5]]
    assert len({len(q["problem"]) for q in chosen}) > 1
    return [{k: q[k] for k in ("unique_id", "problem", "level", "subject")} for q in chosen]


class GenerateSpy:
    """Wraps model.generate and keeps what it was given and what it returned."""

    def __init__(self, model):
        self.model, self.original, self.calls = model, model.generate, []

    def __call__(self, **kwargs):
        output = self.original(**kwargs)
        self.calls.append({**kwargs, "output": output})
        return output


@pytest.fixture
def spy(monkeypatch):
    def attach(model):
        generate_spy = GenerateSpy(model)
        monkeypatch.setattr(model, "generate", generate_spy)
        return generate_spy

    return attach


def eos_biased(model, tokenizer, bias: float):
    """A copy of `model` that emits EOS often, so rows finish at different lengths."""
    biased = copy.deepcopy(model)
    biased.generation_config.sequence_bias = {(tokenizer.eos_token_id,): bias}
    return biased


def prompt_ids(tokenizer, problem: str) -> list[int]:
    return [tokenizer.bos_token_id] + tokenizer(formats.format_prompt(problem), add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------


def test_rows_layout_and_eos_handling(random_model, tokenizer, questions, spy):
    model = eos_biased(random_model, tokenizer, 3.0)
    generate = spy(model)
    config = SamplingConfig(num_samples=4, temperature=1.0, top_k=0, max_new_tokens=12, batch_size=8, seed=0)
    rows = list(sample_solutions(model, tokenizer, questions, config, progress=False))
    assert len(rows) == len(questions) * 4
    assert len(generate.calls) == 3  # 2 questions (8 sequences) per call: 2 + 2 + 1
    for q_index, question in enumerate(questions):
        mine = rows[q_index * 4 : (q_index + 1) * 4]
        assert [r["sample_index"] for r in mine] == [0, 1, 2, 3]
        for row in mine:
            assert row["unique_id"] == question["unique_id"]
            assert row["level"] == question["level"]
            assert row["subject"] == question["subject"]
            assert set(row) == {"unique_id", "level", "subject", "sample_index", "completion", "num_tokens", "finished"}
    # Check every row against the raw tokens generate returned.
    raw = []
    for call in generate.calls:
        width = call["input_ids"].shape[1]
        raw += [seq[width:].tolist() for seq in call["output"]]
    assert len(raw) == len(rows)
    eos = tokenizer.eos_token_id
    for row, tokens in zip(rows, raw):
        assert isinstance(row["completion"], str)
        assert 1 <= row["num_tokens"] <= config.max_new_tokens
        assert row["finished"] == (eos in tokens)
        if row["finished"]:
            assert row["num_tokens"] == tokens.index(eos) + 1
        else:
            assert row["num_tokens"] == len(tokens) == config.max_new_tokens
        kept = tokens[: row["num_tokens"]]
        assert row["completion"] == tokenizer.decode(kept, skip_special_tokens=True)
        assert tokenizer.eos_token not in row["completion"] and tokenizer.pad_token not in row["completion"]
    # The bias makes both outcomes occur, so both branches above were exercised.
    assert {row["finished"] for row in rows} == {True, False}
    assert any(r["finished"] and r["num_tokens"] > 1 for r in rows)


def test_unbiased_random_model_rows(random_model, tokenizer, questions):
    config = SamplingConfig(num_samples=3, temperature=1.0, top_k=0, max_new_tokens=10, batch_size=6, seed=0)
    rows = list(sample_solutions(random_model, tokenizer, questions[:2], config, progress=False))
    assert [(r["unique_id"], r["sample_index"]) for r in rows] == [
        (q["unique_id"], i) for q in questions[:2] for i in range(3)
    ]
    for row in rows:
        assert row["num_tokens"] <= 10
        assert row["finished"] or row["num_tokens"] == 10  # unfinished rows ran to the limit


def test_same_seed_same_samples_other_seed_different(random_model, tokenizer, questions):
    def run(seed):
        config = SamplingConfig(num_samples=4, temperature=1.0, top_k=0, max_new_tokens=16, batch_size=8, seed=seed)
        return [r["completion"] for r in sample_solutions(random_model, tokenizer, questions, config, progress=False)]

    first = run(0)
    assert run(0) == first
    other = run(1)
    assert other != first
    assert sum(a != b for a, b in zip(first, other)) > len(first) // 2
    # Samples of one question differ from each other too (sampling, not repeated greedy).
    assert len(set(first[:4])) > 1


def test_greedy_matches_unbatched_generate(trained_model, tokenizer, questions):
    config = SamplingConfig(greedy=True, num_samples=5, max_new_tokens=40, batch_size=8, seed=0)
    rows = list(sample_solutions(trained_model, tokenizer, questions, config, progress=False))
    assert [r["unique_id"] for r in rows] == [q["unique_id"] for q in questions]
    assert all(r["sample_index"] == 0 for r in rows)
    assert len({r["completion"] for r in rows}) >= 3  # prompt-dependent, so the comparison means something
    eos = tokenizer.eos_token_id
    for row, question in zip(rows, questions):
        ids = torch.tensor([prompt_ids(tokenizer, question["problem"])])
        with torch.no_grad():
            output = trained_model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=40,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens = output[0, ids.shape[1] :].tolist()
        length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        assert row["completion"] == tokenizer.decode(tokens[:length], skip_special_tokens=True)
        assert row["num_tokens"] == length
        assert row["finished"] == (eos in tokens)
    # Greedy is deterministic whatever the seed.
    again = list(
        sample_solutions(
            trained_model,
            tokenizer,
            questions,
            SamplingConfig(greedy=True, max_new_tokens=40, batch_size=8, seed=7),
            progress=False,
        )
    )
    assert [r["completion"] for r in again] == [r["completion"] for r in rows]


def test_greedy_check_detects_bad_padding(trained_model, tokenizer, questions):
    """The comparison above has teeth: right padding in a batch changes the continuations."""
    prompts = [tokenizer.bos_token + formats.format_prompt(q["problem"]) for q in questions]
    tokenizer.padding_side = "right"
    try:
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = "left"
    assert (encoded["attention_mask"] == 0).any()
    with torch.no_grad():
        batched = trained_model.generate(
            **encoded,
            do_sample=False,
            max_new_tokens=40,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )[:, encoded["input_ids"].shape[1] :]
    config = SamplingConfig(greedy=True, max_new_tokens=40, batch_size=8)
    rows = list(sample_solutions(trained_model, tokenizer, questions, config, progress=False))
    wrong = [tokenizer.decode(t, skip_special_tokens=True) for t in batched]
    assert any(w != r["completion"] for w, r in zip(wrong, rows))


def test_prompt_is_bos_plus_formatted_problem(random_model, tokenizer, questions, spy, data):
    generate = spy(random_model)
    config = SamplingConfig(num_samples=2, temperature=1.0, top_k=0, max_new_tokens=4, batch_size=64, seed=0)
    list(sample_solutions(random_model, tokenizer, questions, config, progress=False))
    assert len(generate.calls) == 1
    call = generate.calls[0]
    assert call["num_return_sequences"] == 2 and call["max_new_tokens"] == 4 and call["do_sample"] is True
    input_ids, mask = call["input_ids"], call["attention_mask"]
    assert input_ids.shape[0] == len(questions)
    for row_ids, row_mask, question in zip(input_ids.tolist(), mask.tolist(), questions):
        pads = row_mask.count(0)
        assert row_mask == [0] * pads + [1] * (len(row_mask) - pads)  # left padding
        assert row_ids[:pads] == [tokenizer.pad_token_id] * pads
        assert row_ids[pads:] == prompt_ids(tokenizer, question["problem"])
        text = tokenizer.decode(row_ids[pads:])
        assert text == tokenizer.bos_token + formats.format_prompt(question["problem"])
    assert min(row.count(0) for row in mask.tolist()) == 0
    # Exactly the prompt the SFT examples were trained on (tokens where the labels are masked).
    rows, _ = data
    example = training.sft_example(rows[0]["problem"], rows[0]["steps"], rows[0]["answer"], tokenizer, 10_000)
    masked = example["labels"].count(training.IGNORE_INDEX)
    assert example["input_ids"][:masked] == prompt_ids(tokenizer, rows[0]["problem"])


def test_sampling_settings_reach_generate(random_model, tokenizer, questions, spy):
    generate = spy(random_model)
    config = SamplingConfig(num_samples=3, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=5, batch_size=3)
    rows = list(sample_solutions(random_model, tokenizer, questions[:2], config, progress=False))
    assert len(rows) == 6 and len(generate.calls) == 2  # batch_size 3 // 3 samples = 1 question a call
    call = generate.calls[0]
    assert (call["temperature"], call["top_k"], call["top_p"]) == (0.7, 20, 0.9)
    assert call["eos_token_id"] == tokenizer.eos_token_id and call["pad_token_id"] == tokenizer.pad_token_id
    generate.calls.clear()
    list(
        sample_solutions(
            random_model,
            tokenizer,
            questions[:2],
            SamplingConfig(greedy=True, batch_size=1, max_new_tokens=3),
            progress=False,
        )
    )
    assert len(generate.calls) == 2
    assert all(c["do_sample"] is False and c["num_return_sequences"] == 1 for c in generate.calls)


# --- the in-context baseline --------------------------------------------------------------------


def test_in_context_prompts_and_completions(random_model, tokenizer, questions, monkeypatch):
    """Mechanics with the tiny model: the prompt is BOS + exemplars + question, each tokenized on
    its own; a completion ends before the next "# Question" and then counts as finished."""
    from easy2hard import formats, sampling

    exemplars = [{"unique_id": "e1", "problem": "What is 1 + 1?", "steps": ["1 + 1 = 2."], "answer": "2"}]
    context = formats.format_exemplars(exemplars)
    prompt = sampling.encode_prompt(tokenizer, questions[0]["problem"], context=context)
    plain = sampling.encode_prompt(tokenizer, questions[0]["problem"])
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    assert prompt == plain[:1] + context_ids + plain[1:]
    assert tokenizer.decode(prompt, skip_special_tokens=True) == context + formats.format_prompt(
        questions[0]["problem"]
    )

    seen_prompts = []

    def fake_generate(model, tokenizer, prompts, config, progress=True, desc="sample", usage=None, model_path=None):
        seen_prompts.extend(prompts)
        for _ in prompts:
            yield [
                {
                    "text": "1 + 2 = 3.\n\n# Answer\n\n3\n\n# Question\n\nWhat is",
                    "token_ids": [],
                    "num_tokens": 20,
                    "finished": False,
                },
                {"text": "1 + 2 =", "token_ids": [], "num_tokens": 3, "finished": False},
            ]

    monkeypatch.setattr(sampling, "generate", fake_generate)
    rows = list(
        sampling.sample_solutions(
            random_model, tokenizer, questions[:2], SamplingConfig(num_samples=2), progress=False, context=context
        )
    )
    assert [(r["completion"], r["finished"]) for r in rows[:2]] == [
        ("1 + 2 = 3.\n\n# Answer\n\n3", True),
        ("1 + 2 =", False),
    ]
    assert len(seen_prompts) == 2 and all(p[: 1 + len(context_ids)] == plain[:1] + context_ids for p in seen_prompts)
    # Without exemplars nothing is cut: a policy's completion is its own.
    rows = list(
        sampling.sample_solutions(random_model, tokenizer, questions[:1], SamplingConfig(num_samples=2), progress=False)
    )
    assert rows[0]["completion"].endswith("What is") and rows[0]["finished"] is False


def test_generate_progress_moves_as_sequences_finish(random_model, tokenizer, questions, monkeypatch):
    """HF generate returns a batch at once; the bar still moves as each sequence reaches EOS."""
    from easy2hard import sampling

    updates = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total = total

        def update(self, n=1):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(sampling, "tqdm", Bar)
    model = eos_biased(random_model, tokenizer, 2.0)
    config = SamplingConfig(num_samples=4, max_new_tokens=48, batch_size=64, seed=0)
    rows = list(sample_solutions(model, tokenizer, questions, config, progress=True))
    assert sum(updates) == len(rows) == 4 * len(questions)  # one batch, counted sequence by sequence
    assert len([n for n in updates if n > 0]) > 2 and all(n >= 0 for n in updates)
