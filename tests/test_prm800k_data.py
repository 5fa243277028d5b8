"""PRM800K SFT data (the authors' recipe): +1-rated completions along the labeller's path, one
example per step prefix, EOS only after the answer, de-duplicated; on the real sample records
and on hand-made ones."""

import pytest

from conftest import PRM800K_EXAMPLES_DIR
from easy2hard import formats, modeling, prm800k_data, training
from easy2hard.training import IGNORE_INDEX

SAMPLE_FILES = ("phase1_train.sample.jsonl", "phase1_test.sample.jsonl", "phase2.sample.jsonl")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    if not all((PRM800K_EXAMPLES_DIR / name).exists() for name in SAMPLE_FILES):
        pytest.skip(f"PRM800K sample records not found under {PRM800K_EXAMPLES_DIR}")
    return [r for name in SAMPLE_FILES for r in prm800k_data.read_records(str(PRM800K_EXAMPLES_DIR / name))]


def record(problem, steps):
    return {"question": {"problem": problem}, "label": {"steps": steps}}


def step(*completions, chosen=None, human=None):
    return {
        "completions": [{"text": text, "rating": rating} for text, rating in completions],
        "chosen_completion": chosen,
        "human_completion": {"text": human} if human else None,
    }


def test_sample_records_give_one_example_per_positive_completion_along_the_path(records):
    rows, counts = prm800k_data.sft_rows(records, {}, [1, 2, 3], set(), "samples")
    # Independently: every +1 completion the path reaches, record 4 (a copy of record 1) dropped.
    expected = []
    for index, rec in enumerate(records, start=1):
        if index == 4:
            continue
        for number, st in enumerate(rec["label"]["steps"], start=1):
            expected += [(index, number, c["text"]) for c in st["completions"] if c["rating"] == 1]
            if st["chosen_completion"] is None and st["human_completion"] is None and len(st["completions"]) != 1:
                break
    assert [(int(r["unique_id"].split("/")[1]), int(r["unique_id"].split("/")[2])) for r in rows] == [
        (i, n) for i, n, _ in expected
    ]
    assert counts["examples"] == len(rows) > 10
    assert counts["duplicates dropped"] > 0
    for row, (_, number, text) in zip(rows, expected):
        assert row["target"].strip() == prm800k_data.normalize_completion(text)
        assert row["final"] == (formats.ANSWER_HEADER in text)
        if number == 1:
            assert row["context"] == "" and not row["target"].startswith("\n")
        else:
            assert len(formats.parse_solution(row["context"])[0]) == number - 1
            assert row["target"].startswith(formats.STEP_SEPARATOR)
    # Record 1 ends with "... # Answer\n\n29": the final examples end the solution.
    finals = [r for r in rows if r["final"]]
    assert finals and all(
        r["target"].endswith("# Answer\n\n29") for r in finals if r["unique_id"].startswith("prm800k/1/")
    )
    # The human-written step 2 of record 1 is on the path of its later examples.
    assert "We have $3p+e=1.24$ and $5p+e=1.82$." in next(r for r in rows if r["unique_id"] == "prm800k/1/3")["context"]


def test_answer_spacing_ratings_and_the_path_on_hand_records():
    rec = record(
        "P?",
        [
            step(("First.", 1), ("Wrong.", -1), ("Meh.", 0), chosen=0),
            step(("Only one, unchosen.", 1)),  # a single unchosen completion: the path continues with it
            step(
                ("So 5.\n# Answer\n\n5", 1), ("# Answer\n\n5", 1), ("Nope.", None), ("Then.\n\n# Answer", 1)
            ),  # ends the path
            step(("never reached", 1), chosen=0),
        ],
    )
    rows, counts = prm800k_data.sft_rows([rec], {}, [1, 2, 3], set(), "hand")
    assert [(r["context"], r["target"], r["final"]) for r in rows] == [
        ("", "First.", False),
        ("First.", "\n\nOnly one, unchosen.", False),
        ("First.\n\nOnly one, unchosen.", "\n\nSo 5.\n\n# Answer\n\n5", True),
        ("First.\n\nOnly one, unchosen.", "\n\n# Answer\n\n5", True),
        ("First.\n\nOnly one, unchosen.", "\n\nThen.\n\n# Answer\n\n", False),  # no blank line after "# Answer": no EOS
    ]
    assert counts["completions not rated +1"] == 3
    # The same record twice (phase 1 and 2 overlap): every example once.
    again, counts = prm800k_data.sft_rows([rec, rec], {}, [1, 2, 3], set(), "hand")
    assert again == rows and counts["duplicates dropped"] == 5


def test_records_of_test_and_hard_problems_are_dropped():
    recs = [record(p, [step(("A.", 1), chosen=0)]) for p in ("easy", "hard", "test", "not in MATH")]
    levels = {"easy": 2, "hard": 4, "test": 1}
    rows, counts = prm800k_data.sft_rows(recs, levels, [1, 2, 3], {"test"}, "hand")
    assert [r["problem"] for r in rows] == ["easy", "not in MATH"]
    assert counts["records of hard (or unlevelled) MATH problems"] == 1
    assert counts["records of excluded problems (test, validation, hard train)"] == 1


@pytest.fixture(scope="module")
def tokenizer():
    texts = [formats.format_prompt("P?") + "First.\n\nSo 5.\n\n# Answer\n\n5"] * 4
    return modeling.train_tokenizer(texts, 300)


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A SentencePiece-style tokenizer (Llama's kind): a word-start marker before the first word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator(
        ["First. So 5. Then 6.\n\n# Answer\n\n5"] * 4,
        trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", "</s>", "<pad>", "<unk>"]),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("final", [True, False])
def test_continuation_example_trains_on_the_target_only(tokenizer, final):
    example = training.continuation_example("P?", "First.", "\n\nSo 5.", final, tokenizer, 512)
    ids, labels = example["input_ids"], example["labels"]
    learned = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned, skip_special_tokens=True) == "\n\nSo 5."
    assert (ids[-1] == tokenizer.eos_token_id) == final
    assert tokenizer.decode(ids, skip_special_tokens=True) == formats.format_prompt("P?") + "First.\n\nSo 5."
    assert labels[: len(ids) - len(learned)] == [IGNORE_INDEX] * (len(ids) - len(learned))
    assert training.continuation_example("P?", "First.", "\n\nSo 5.", final, tokenizer, len(ids) - 1) is None


def test_continuation_example_tokenises_context_and_target_together(metaspace_tokenizer):
    tok = metaspace_tokenizer
    alone = tok("\n\nSo 5.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(alone)[0].startswith("\u2581")  # the marker a target alone would teach
    example = training.continuation_example("P?", "First.", "\n\nSo 5.", True, tok, 512)
    together = tok("First.\n\nSo 5.", add_special_tokens=False)["input_ids"]
    prompt = len(example["input_ids"]) - len(together) - 1
    assert example["input_ids"][prompt:] == together + [tok.eos_token_id]
    learned = [label for label in example["labels"] if label != IGNORE_INDEX]
    assert learned == together[-len(learned) + 1 :] + [tok.eos_token_id] and alone[0] not in learned
