"""RL pieces checked exactly: the ReST-EM filter (and that it never reads a hard question's
outcome), DPO pair construction and loss against hand computations, PPO reward shaping on a
worked example, GAE, the clipped losses, and short real runs of DPO and PPO on a tiny Llama."""

import math

import pytest
import torch

from conftest import TINY_SHAPE
from easy2hard import dpo, evaluator, formats, modeling, ppo, rest_em, rl_report, sampling, tracking, training

EASY = [1, 2, 3]


class HardRow(dict):
    """A hard question's graded row that fails the test if anything reads its outcome."""

    def __getitem__(self, key):
        if key == "correct":
            raise AssertionError("a hard question's outcome was read")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "correct":
            raise AssertionError("a hard question's outcome was read")
        return super().get(key, default)


def solution(tag: str, answer: str | None = "4", steps: int = 2) -> str:
    body = formats.STEP_SEPARATOR.join(f"step {i} of {tag}" for i in range(steps))
    return body if answer is None else body + formats.ANSWER_MARKER + answer


def row(uid, level, index, completion, correct=None, finished=True):
    data = {"unique_id": uid, "level": level, "sample_index": index, "completion": completion, "finished": finished}
    if level in EASY:
        return {**data, "correct": correct}
    return HardRow({**data, "correct": correct})  # a planted outcome: must stay unread


def scores_for(rows, values):
    """(uid, index) -> per-unit scores whose min is the given value."""
    return {(r["unique_id"], r["sample_index"]): [1.0, v] for r, v in zip(rows, values)}


# --- ReST-EM ------------------------------------------------------------------------------------


@pytest.fixture
def graded():
    rows = [
        row("e1", 1, 0, solution("a"), correct=True),
        row("e1", 1, 1, solution("b"), correct=False),
        row("e1", 1, 2, solution("a"), correct=True),  # duplicate of sample 0
        row("e1", 1, 3, solution("c"), correct=True, finished=False),  # truncated
        row("h1", 5, 0, solution("x"), correct=False),
        row("h1", 5, 1, solution("y"), correct=True),
        row("h1", 5, 2, solution("z", answer=None), correct=False),  # no answer section
        row("h1", 5, 3, solution("w"), correct=False),
    ]
    return rows, scores_for(rows, [0.2, 0.9, 0.2, 0.9, 0.8, 0.3, 0.99, 0.6])


def kept_ids(kept):
    return sorted((k["unique_id"], k["sample_index"]) for k in kept)


def test_rest_em_easy_by_answer_hard_by_top_k_score(graded):
    rows, scores = graded
    kept, stats = rest_em.select(rows, scores, EASY, rest_em.RestEmConfig(top_k=1))
    # easy: the correct, finished, distinct solution; hard: the best-scored solution with an answer
    assert kept_ids(kept) == [("e1", 0), ("h1", 0)]
    assert stats["easy_kept"] == 1 and stats["hard_kept"] == 1 and stats["hard_questions"] == 1
    assert kept[1]["steps"] == ["step 0 of x", "step 1 of x"] and kept[1]["answer"] == "4"
    assert kept[1]["score"] == pytest.approx(0.8)


def test_rest_em_hard_filters_use_scores_only(graded):
    rows, scores = graded
    threshold = rest_em.RestEmConfig(hard_filter="threshold", threshold=0.5)
    assert kept_ids(rest_em.select(rows, scores, EASY, threshold)[0]) == [("e1", 0), ("h1", 0), ("h1", 3)]
    both = rest_em.RestEmConfig(hard_filter="top_k_threshold", top_k=2, threshold=0.7)
    assert kept_ids(rest_em.select(rows, scores, EASY, both)[0]) == [("e1", 0), ("h1", 0)]
    none = rest_em.RestEmConfig(hard_filter="none")
    assert kept_ids(rest_em.select(rows, scores, EASY, none)[0]) == [("e1", 0)]


def test_rest_em_easy_modes(graded):
    rows, scores = graded
    by_score = rest_em.RestEmConfig(easy_filter="score", hard_filter="top_k", top_k=1)
    assert ("e1", 1) in kept_ids(rest_em.select(rows, scores, EASY, by_score)[0])  # incorrect, best score
    strict = rest_em.RestEmConfig(easy_filter="answer_and_score", threshold=0.5)
    assert ("e1", 0) not in kept_ids(rest_em.select(rows, scores, EASY, strict)[0])  # correct but scored 0.2
    capped = rest_em.RestEmConfig(hard_filter="threshold", threshold=0.0, max_per_question=1)
    assert kept_ids(rest_em.select(rows, scores, EASY, capped)[0]) == [("e1", 0), ("h1", 0)]


def test_rest_em_never_reads_hard_outcomes():
    # Every hard row is a HardRow: any read of its `correct` fails, whatever the filter.
    rows = [row("h", 4, i, solution(str(i)), correct=bool(i % 2)) for i in range(4)]
    scores = scores_for(rows, [0.1, 0.2, 0.3, 0.4])
    for hard_filter in rest_em.HARD_FILTERS:
        for easy_filter in rest_em.EASY_FILTERS:
            rest_em.select(rows, scores, EASY, rest_em.RestEmConfig(easy_filter=easy_filter, hard_filter=hard_filter))


def test_rest_em_rejects_unknown_filter():
    with pytest.raises(ValueError, match="hard_filter"):
        rest_em.RestEmConfig(hard_filter="gold")


# --- DPO pairs ----------------------------------------------------------------------------------


def test_dpo_pairs_best_against_worst():
    rows = [row("h", 4, i, solution(str(i)), correct=None) for i in range(4)]
    rows.append(row("h", 4, 4, solution("cut", answer=None), correct=None, finished=False))
    scores = scores_for(rows, [0.5, 0.9, 0.3, 0.7, 0.05])
    pairs, stats = dpo.make_pairs(rows, scores, EASY, dpo.DPOConfig(pairs_per_question=2, min_margin=0.0))
    # chosen: best complete solutions (1, then 3); rejected: worst of all (the truncated 4, then 2)
    assert [(p["chosen"]["sample_index"], p["rejected"]["sample_index"]) for p in pairs] == [(1, 4), (3, 2)]
    assert pairs[0]["chosen_score"] == pytest.approx(0.9) and pairs[0]["rejected_score"] == pytest.approx(0.05)
    assert pairs[0]["rejected"]["finished"] is False
    assert stats == {
        "questions": 1,
        "pairs": 2,
        "questions_paired": 1,
        "questions_without_a_whole_solution": 0,
        "questions_with_one_solution": 0,
        "min_margin": 0.0,
        "score_gap": {"questions": 1, "max": pytest.approx(0.85), "median": pytest.approx(0.85)},
        "score_range": [pytest.approx(0.05), pytest.approx(0.9)],
    }


def test_dpo_pairs_margin_ties_and_duplicates():
    rows = [row("h", 4, 0, solution("a")), row("h", 4, 1, solution("a")), row("h", 4, 2, solution("b"))]
    scores = scores_for(rows, [0.6, 0.1, 0.55])
    # sample 1 duplicates sample 0 (its low score is never used); the gap 0.05 is below the margin
    assert dpo.make_pairs(rows, scores, EASY, dpo.DPOConfig(min_margin=0.1))[0] == []
    pairs, _ = dpo.make_pairs(rows, scores, EASY, dpo.DPOConfig(min_margin=0.05 - 1e-9))
    assert [(p["chosen"]["sample_index"], p["rejected"]["sample_index"]) for p in pairs] == [(0, 2)]
    tied = scores_for(rows, [0.5, 0.5, 0.5])
    assert (
        dpo.make_pairs(rows, tied, EASY, dpo.DPOConfig(min_margin=0.0))[0] == []
    )  # a tie is no pair, even at margin 0


def test_dpo_pairs_easy_answers_rank_first_and_hard_outcomes_stay_unread():
    easy = [row("e", 2, 0, solution("a"), correct=False), row("e", 2, 1, solution("b"), correct=True)]
    hard = [row("h", 5, i, solution(str(i)), correct=bool(i)) for i in range(2)]
    scores = scores_for(easy + hard, [0.9, 0.2, 0.4, 0.8])
    pairs, _ = dpo.make_pairs(easy + hard, scores, EASY, dpo.DPOConfig(easy_use_answers=True, min_margin=0.5))
    by_question = {p["unique_id"]: (p["chosen"]["sample_index"], p["rejected"]["sample_index"]) for p in pairs}
    assert by_question == {"e": (1, 0)}  # correct beats a higher-scored incorrect; hard gap 0.4 < margin
    pairs, _ = dpo.make_pairs(easy + hard, scores, EASY, dpo.DPOConfig(easy_use_answers=False, min_margin=0.0))
    assert {p["unique_id"]: p["chosen"]["sample_index"] for p in pairs} == {"e": 0, "h": 1}


# --- DPO loss -----------------------------------------------------------------------------------


def test_dpo_loss_by_hand():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -2.0, -1.5, -1.5))
    # h = (pc - rc) - (pr - rr) = 0.5 + 0.5 = 1; DPO: log(1 + exp(-beta h))
    losses, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, dpo.DPOConfig(beta=0.1))
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-0.1)))
    assert chosen.item() == pytest.approx(0.05) and rejected.item() == pytest.approx(-0.05)
    smoothed, _, _ = dpo.dpo_loss(pc, pr, rc, rr, dpo.DPOConfig(beta=0.1, label_smoothing=0.2))
    expected = 0.8 * math.log(1 + math.exp(-0.1)) + 0.2 * math.log(1 + math.exp(0.1))
    assert smoothed.item() == pytest.approx(expected)
    ipo, _, _ = dpo.dpo_loss(pc, pr, rc, rr, dpo.DPOConfig(beta=0.1, loss_type="ipo"))
    assert ipo.item() == pytest.approx((1 - 1 / 0.2) ** 2)  # (h - 1/(2 beta))^2 = 16


@pytest.fixture(scope="module")
def tiny(synthetic_tokenizer):
    return modeling.build_tiny_llama(synthetic_tokenizer, TINY_SHAPE, 0), synthetic_tokenizer


def test_sequence_logps_match_log_softmax(tiny):
    model, tokenizer = tiny
    example = dpo.response_example(sampling.encode_prompt(tokenizer, "1 + 2"), solution("s"), True, tokenizer)
    batch = training.collate([example], tokenizer.pad_token_id)
    with torch.no_grad():
        total = dpo.sequence_logps(model, batch, average=False).item()
        mean = dpo.sequence_logps(model, batch, average=True).item()
        logits = model(input_ids=batch["input_ids"]).logits[0].log_softmax(-1)
    ids = example["input_ids"]
    prompt_len = len(ids) - sum(label != -100 for label in example["labels"])
    expected = sum(logits[t - 1, ids[t]].item() for t in range(prompt_len, len(ids)))
    assert total == pytest.approx(expected, rel=1e-5)
    assert mean == pytest.approx(expected / (len(ids) - prompt_len), rel=1e-5)
    assert ids[-1] == tokenizer.eos_token_id


def pair_examples(tokenizer, count=8):
    examples = []
    for i in range(count):
        pair = {
            "chosen": {"completion": solution(f"good {i}", answer=str(i)), "finished": True},
            "rejected": {"completion": solution(f"bad {i}", answer=None, steps=3), "finished": False},
        }
        examples.append(dpo.pair_example(f"{i} + {i}", pair, tokenizer, 256))
    return examples


def test_dpo_training_starts_at_log2_and_raises_the_margin(tiny):
    model, tokenizer = tiny
    model = modeling.build_tiny_llama(tokenizer, TINY_SHAPE, 0)
    config = dpo.DPOConfig(beta=0.5)
    examples = pair_examples(tokenizer)
    references = dpo.reference_logps(model, examples, tokenizer.pad_token_id, config, batch_size=3)
    examples = [{**e, "ref_logps": r} for e, r in zip(examples, references)]
    batch = dpo.collate_pairs(examples, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 16 and batch["ref_logps"].shape == (8, 2)
    with torch.no_grad():
        loss, metrics = dpo.loss_fn(config)(model, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # policy == reference: h = 0
    train = training.TrainConfig(
        learning_rate=3e-3,
        epochs=6,
        global_batch_size=8,
        micro_batch_size=4,
        max_length=256,
        warmup_ratio=0.0,
        packing=False,
        deepspeed="never",
        seed=0,
    )
    _, history = training.train(
        model, examples, train, tokenizer.pad_token_id, loss_fn=dpo.loss_fn(config), collate_fn=dpo.collate_pairs
    )
    assert history[-1]["loss"] < history[0]["loss"] - 0.1
    assert history[-1]["reward_margin"] > 0 and history[-1]["reward_accuracy"] == 1.0
    assert history[0]["tokens"] == sum(training.num_tokens(e) for e in examples)


# --- PPO rewards ----------------------------------------------------------------------------------


def test_process_rewards_worked_example():
    scores = [0.9, 0.95, 0.6, 0.7]
    # running minimum 1 -> 0.9 -> 0.9 -> 0.6: drops of 0.1 and 0.3 are charged, rises earn nothing
    assert ppo.process_rewards(scores, 0.0, 0.0) == pytest.approx([-0.1, 0.0, -0.3, 0.0])
    assert sum(ppo.process_rewards(scores, 0.0, 0.0)) == pytest.approx(min(scores) - 1)
    # rises capped at the upper bound 0.02, plus a bonus of 0.01 per unit
    assert ppo.process_rewards(scores, 0.02, 0.01) == pytest.approx([-0.09, 0.03, -0.29, 0.03])


def test_token_rewards_worked_example():
    config = ppo.PPOConfig(outcome_reward=1.0, process_weight=2.0, process_upper_bound=0.0, no_answer_penalty=-1.0)
    solution = "a\n\nb\n\n# Answer\n\n5"
    rewards = ppo.token_rewards(8, [2, 5, 7], [0.9, 0.6, 0.8], correct=True, completion=solution, config=config)
    assert rewards == pytest.approx([0, 0, -0.2, 0, 0, -0.6, 0, 1.0])  # 2 x (-0.1), 2 x (-0.3), 2 x 0 + 1
    hard = ppo.token_rewards(8, [2, 5, 7], [0.9, 0.6, 0.8], correct=None, completion=solution, config=config)
    assert hard[-1] == 0.0  # a hard question earns no outcome reward
    truncated = ppo.token_rewards(6, [2, 5], [0.9, 0.6], correct=False, completion="a\n\nb", config=config)
    assert truncated == pytest.approx([0, 0, -0.2, 0, 0, -0.6 - 1.0])


AUTHORS = dict(
    running_min_start=0.5,
    process_upper_bound=0.0,
    total_step_bonus=0.25,
    answer_process_reward=False,
    hard_outcome_reward=0.25,
    stop_penalty="graded",
    no_answer_penalty=-1.0,
    kl_estimator="k1_clamped",
)


def test_authors_process_rewards_worked_example():
    # running minimum 0.5: 0.9 and 0.7 are above it (not charged); 0.3 drops it by 0.2, 0.4 is a rise
    # (0); each of the 4 steps gets 0.25 / 4 of the bonus, whatever the solution's length
    assert ppo.process_rewards([0.9, 0.7, 0.3, 0.4], 0.0, 0.0, 0.5, 0.25) == pytest.approx(
        [0.0625, 0.0625, -0.2 + 0.0625, 0.0625]
    )
    assert sum(ppo.process_rewards([0.9] * 8, 0.0, 0.0, 0.5, 0.25)) == pytest.approx(0.25)  # no length incentive
    # per-step bonus (ours): the same steps, twice as many, earn more
    assert sum(ppo.process_rewards([0.9] * 8, 0.0, 0.01)) == pytest.approx(-0.1 + 8 * 0.01)
    assert sum(ppo.process_rewards([0.9] * 4, 0.0, 0.01)) == pytest.approx(-0.1 + 4 * 0.01)


def test_authors_token_rewards_worked_example():
    config = ppo.PPOConfig(**AUTHORS)
    solution = "So $x = 5$.\n\nThus $x = 5$.\n\n# Answer\n\n5"  # "5" in the last step, not as $5$: 0.75
    # two steps (ends 3, 7) and the answer unit (end 9): the answer's 0.2 is NOT paid as a process reward
    easy = ppo.token_rewards(10, [3, 7, 9], [0.6, 0.4, 0.2], correct=True, completion=solution, config=config)
    assert easy == pytest.approx([0, 0, 0, 0.125, 0, 0, 0, -0.1 + 0.125, 0, 1.0 - 0.75])
    hard = ppo.token_rewards(10, [3, 7, 9], [0.6, 0.4, 0.2], correct=None, completion=solution, config=config)
    assert hard[-1] == pytest.approx(0.25 - 0.75)  # hard questions: the constant 0.25
    # no answer section: full penalty; the last step is still rewarded
    cut = ppo.token_rewards(8, [3, 7], [0.6, 0.4], correct=None, completion="So $x$.\n\nThus", config=config)
    assert cut == pytest.approx([0, 0, 0, 0.125, 0, 0, 0, -0.1 + 0.125 + 0.25 - 1.0])


@pytest.mark.parametrize(
    "completion, fraction",
    [
        ("Hence $\\boxed{5}$.\n\n# Answer\n\n5", 0.0),  # boxed anywhere in the solution
        ("First.\n\nSo it is $5$.\n\n# Answer\n\n5", 0.5),  # $answer$ in the last step
        ("First.\n\nSo it is $5.$\n\n# Answer\n\n5", 0.5),
        ("It is $5$.\n\nSo we are done.\n\n# Answer\n\n5", 1.0),  # only in an earlier step
        ("So x = 5.\n\n# Answer\n\n5", 0.75),  # in the last step, not in math mode
        ("So x = 6.\n\n# Answer\n\n5", 1.0),
        ("So x = 5.\n\n# Answer\n\n", 1.0),  # empty answer
        ("So x = 5.", 1.0),  # no answer section
    ],
)
def test_graded_stop_penalty(completion, fraction):
    assert ppo.stop_penalty_fraction(completion) == fraction


def test_outcome_reward_pays_the_aggregated_score_at_the_end():
    config = ppo.PPOConfig(reward="outcome", aggregation="last", process_weight=1.0, outcome_reward=1.0)
    rewards = ppo.token_rewards(
        6, [1, 3, 5], [0.9, 0.2, 0.7], correct=False, completion="a\n\nb\n\n# Answer\n\n1", config=config
    )
    assert rewards == pytest.approx([0, 0, 0, 0, 0, 0.7])
    config = ppo.PPOConfig(reward="outcome", aggregation="min")
    assert ppo.token_rewards(6, [1, 3, 5], [0.9, 0.2, 0.7], None, "a\n\nb\n\n# Answer\n\n1", config)[
        -1
    ] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="rl.ppo.reward"):
        ppo.PPOConfig(reward="final")


@pytest.mark.parametrize("options", [{}, AUTHORS, {"reward": "outcome"}], ids=["ours", "authors", "outcome"])
def test_an_unscorable_solution_gets_the_lowest_evaluator_reward(options):
    config = ppo.PPOConfig(**options)
    floor = ppo.evaluator_rewards(5, [], [], has_answer=True, config=config)
    assert floor[:-1] == [0, 0, 0, 0] and floor[-1] <= 0
    for any_scores in ([0.0], [0.3, 0.9], [1.0]):  # no scored solution does worse
        scored = ppo.evaluator_rewards(5, list(range(len(any_scores))), any_scores, True, config)
        assert sum(scored) >= sum(floor)


def test_reward_whitening_keeps_the_mean():
    x = torch.tensor([[1.0, 5.0, 0.0]])  # mean 3, std 2 over the two real tokens
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # (x - mean) / std + mean, as the authors whiten rewards; padding stays 0
    assert ppo.whiten(x, mask, shift_mean=False)[0].tolist() == pytest.approx([2.0, 4.0, 0.0])
    assert ppo.whiten(x, mask)[0].tolist() == pytest.approx([-1.0, 1.0, 0.0])


def test_kl_penalty_k1_and_clamped():
    logps, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    assert ppo.kl_penalty(logps, ref, "k1").tolist() == pytest.approx([0.5, -1.0, 0.0])
    assert ppo.kl_penalty(logps, ref, "k1_clamped").tolist() == pytest.approx([0.5, 0.0, 0.0])  # the authors


def test_rollouts_sample_with_their_own_top_k_and_seed():
    base = sampling.SamplingConfig(num_samples=16, temperature=0.7, top_k=20, seed=3)
    ours = ppo.rollout_sampling(base, ppo.PPOConfig(samples_per_prompt=2, seed=1), step=5)
    assert (ours.top_k, ours.num_samples, ours.seed, ours.temperature) == (20, 2, 7919 + 5, 0.7)
    assert ppo.rollout_sampling(base, ppo.PPOConfig(rollout_top_k=50), step=5).top_k == 50


def test_best_checkpoint_prefers_accuracy_then_the_later_step():
    assert ppo.best_checkpoint({4: 0.30, 8: 0.35, 12: 0.35, 16: 0.20}) == 12
    assert ppo.best_checkpoint({16: 0.5}) == 16
    with pytest.raises(ValueError):
        ppo.best_checkpoint({})


def test_ppo_batch_sizes_must_split_the_rollouts_evenly():
    train = lambda batch: training.TrainConfig(global_batch_size=batch, micro_batch_size=4)  # noqa: E731
    ppo.check_batch_sizes(32, train(16), train(16), 1)
    with pytest.raises(ValueError, match="value_train.global_batch_size"):
        ppo.check_batch_sizes(32, train(16), train(8), 1)
    with pytest.raises(ValueError, match=r"\(24\) must be a multiple"):
        ppo.check_batch_sizes(24, train(16), train(16), 1)
    with pytest.raises(ValueError, match="divide among 3 processes"):
        ppo.check_batch_sizes(32, train(16), train(16), 3)


def test_unit_end_tokens_point_at_the_step_newlines(tiny):
    _, tokenizer = tiny
    text = "2 + 3 = 5.\n\n5 * 4 = 20.\n\n# Answer\n\n20"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ends = ppo.unit_end_tokens(tokenizer, ids, text)
    assert len(ends) == 3 and ends[-1] == len(ids) - 1
    for end, step in zip(ends[:2], ["2 + 3 = 5.", "5 * 4 = 20."]):
        prefix = tokenizer.decode(ids[: end + 1])
        assert prefix.rstrip("\n").endswith(step) and prefix.endswith("\n")
        assert "\n" not in tokenizer.decode(ids[:end])[-len(step) :]  # the token before ends no step
    assert ppo.unit_end_chars("one\n\n\n\ntwo") == [3, 10]  # empty pieces are not steps


# --- GAE and losses -----------------------------------------------------------------------------


def test_gae_by_hand_and_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 7.0, 7.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    advantages, returns = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0: deltas 0.1, 0.1, 0.3 -> A2 = 0.3, A1 = 0.1 + 0.95 * 0.3, A0 = 0.1 + 0.95 * A1
    a1 = 0.1 + 0.95 * 0.3
    assert advantages[0].tolist() == pytest.approx([0.1 + 0.95 * a1, a1, 0.3])
    assert returns[0].tolist() == pytest.approx([0.5 + 0.1 + 0.95 * a1, 0.6 + a1, 1.0])
    # row 1 ends after one token: padding (rewards and values of 7 and 9) does not leak in
    assert advantages[1].tolist() == pytest.approx([0.3, 0.0, 0.0])
    assert returns[1].tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = ppo.whiten(x, mask)
    assert white[0, :3].tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4) and white[0, 3] == 0


def test_clipped_policy_and_value_losses_by_hand():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    advantages = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, stats = ppo.policy_loss(new, old, advantages, mask, clip_range=0.2)
    # token 0: max(-1.5, -1.2) = -1.2; token 1: max(0.5, 0.8) = 0.8
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2) and stats["clipfrac"] == 1.0
    values, old_values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.1]])
    vloss, _ = ppo.value_loss(values, old_values, returns, mask, clip_range=0.2)
    # token 0: max((1-1)^2, (0.2-1)^2) = 0.64; token 1: max(0.01, 0.01) = 0.01
    assert vloss.item() == pytest.approx(0.5 * (0.64 + 0.01) / 2)


def test_collate_rollouts_aligns_per_token_arrays():
    example = {**ppo.rollout_example([1, 2, 3], [7, 8]), "old_logps": [-0.1, -0.2]}
    short = {**ppo.rollout_example([1], [9]), "old_logps": [-0.3]}
    batch = ppo.collate_rollouts([example, short], pad_token_id=0)
    # index j predicts token j + 1: the response tokens 7, 8 sit at ids 3, 4 -> j = 2, 3
    assert torch.allclose(batch["old_logps"], torch.tensor([[0, 0, -0.1, -0.2], [-0.3, 0, 0, 0]]))
    mask = batch["labels"][:, 1:] != training.IGNORE_INDEX
    assert mask.tolist() == [[False, False, True, True], [True, False, False, False]]


# --- PPO end to end -------------------------------------------------------------------------------


def test_ppo_runs_and_updates_both_models(tiny, synthetic_split, tmp_path):
    _, tokenizer = tiny
    rows, _ = synthetic_split
    policy_dir = tmp_path / "policy"
    modeling.build_tiny_llama(tokenizer, TINY_SHAPE, 0).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    policy, _ = modeling.load_model(str(policy_dir))
    reference, _ = modeling.load_model(str(policy_dir))
    torch.manual_seed(0)
    value, _ = evaluator.load_backbone(str(policy_dir))
    reward_model, _ = evaluator.load_backbone(str(policy_dir))
    start_policy = {k: v.clone() for k, v in policy.state_dict().items()}
    start_value = {k: v.clone() for k, v in value.state_dict().items()}
    easy = [r for r in rows if r["level"] in EASY][:6]
    hard = [{k: r[k] for k in ("unique_id", "problem", "level")} for r in rows if r["level"] not in EASY][:6]
    train = dict(
        learning_rate=1e-3,
        epochs=1,
        global_batch_size=4,
        micro_batch_size=2,
        max_length=256,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        deepspeed="never",
        seed=0,
    )
    trainer = ppo.PPOTrainer(
        ppo.Models(policy, value, reference, reward_model, tokenizer),
        easy + hard,
        {r["unique_id"]: r["answer"] for r in easy},
        ppo.PPOConfig(steps=2, prompts_per_step=4, samples_per_prompt=2),
        training.TrainConfig(**train),
        training.TrainConfig(**train),
        sampling.SamplingConfig(max_new_tokens=24, batch_size=16, engine="hf"),
        {"mode": "lenient", "timeout": 5.0, "workers": 1},
        8,
    )
    logged = []

    class Recorder(tracking.Tracker):  # what report_to's trackers receive, step by step
        def log(self, record):
            logged.append(record)

    policy, value, history = trainer.train(None, {}, tracker=Recorder())
    assert [r["step"] for r in history] == [1, 2] and logged == history
    for record in history:
        assert record["num_rollouts"] == 8
        for key in ("reward", "kl", "policy_loss", "value_loss", "clipfrac", "evaluator_reward", "no_answer_rate"):
            assert math.isfinite(record[key]), key
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # first rollouts: policy == reference
    assert any((start_policy[k] - v).abs().max() > 0 for k, v in policy.state_dict().items())
    assert any((start_value[k] - v).abs().max() > 0 for k, v in value.state_dict().items())
    assert all((reference.state_dict()[k] == start_policy[k]).all() for k in start_policy)  # frozen


# --- RL report ------------------------------------------------------------------------------------


def test_round_accuracy_rows():
    rows = [
        {"unique_id": "a", "level": 1, "correct": True},
        {"unique_id": "a", "level": 1, "correct": False},
        {"unique_id": "b", "level": 5, "correct": True},
    ]
    table = {r["levels"]: r for r in rl_report.accuracy_rows(rows, EASY)}
    assert table["easy"]["accuracy"] == 50 and table["hard"]["accuracy"] == 100
    assert table["all"]["accuracy"] == pytest.approx(200 / 3) and table["all"]["num_problems"] == 2


def test_dpo_resume_fingerprint_covers_the_pairs_not_the_reference_log_probs():
    config = training.TrainConfig()
    pair = {
        "chosen": {"input_ids": [1, 2], "labels": [-100, 2]},
        "rejected": {"input_ids": [1, 3], "labels": [-100, 3]},
    }
    fingerprint = training.run_fingerprint(config, [{**pair, "ref_logps": [-1.0, -2.0]}], "TorchEngine")
    assert fingerprint == training.run_fingerprint(config, [{**pair, "ref_logps": [-1.0000001, -2.0]}], "TorchEngine")
    other = {**pair, "rejected": {"input_ids": [1, 4], "labels": [-100, 4]}, "ref_logps": [-1.0, -2.0]}
    assert fingerprint != training.run_fingerprint(config, [other], "TorchEngine")
