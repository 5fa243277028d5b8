"""Iterative DPO (Rafailov et al., 2023; iterated as in Xu et al., 2023 / Pang et al., 2024):
each round ranks the current policy's train samples with the easy-trained evaluator, pairs the
best with the worst solutions of each question, and optimises the DPO loss against a reference
that is the policy the round started from (the SFT model in round 1).

The reference log-probabilities are computed once, before training, by the very model the
round starts from (it is the reference), so no second copy of the model is held in memory.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from easy2hard import candidates, modeling
from easy2hard.metrics import AGGREGATIONS, aggregate_steps
from easy2hard.sampling import encode_prompt
from easy2hard.training import IGNORE_INDEX, TrainConfig, collate, model_inputs, token_logps

LOSS_TYPES = ("sigmoid", "ipo")


@dataclass
class DPOConfig:
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid: DPO | ipo: IPO (squared loss, length-averaged log-probs as in TRL)
    label_smoothing: float = 0.0  # conservative DPO: assumed probability that a pair is flipped
    pairs_per_question: int = 1  # i-th best vs i-th worst, i < this
    min_margin: float = 0.01  # minimum score gap between chosen and rejected
    aggregation: str = "min"  # step aggregation giving one score per solution (the rule sets rl.aggregation)
    easy_use_answers: bool = True  # easy questions: correct beats incorrect before scores are compared

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"dpo.loss_type: {self.loss_type!r} is not one of {list(LOSS_TYPES)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"dpo.aggregation: {self.aggregation!r} is not one of {list(AGGREGATIONS)}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"dpo.label_smoothing: {self.label_smoothing} is not in [0, 0.5)")


@dataclass
class DPOTrainConfig(TrainConfig):
    """rl.dpo.train: each round's DPO optimisation."""

    learning_rate: float = 2e-5
    epochs: float = 1
    micro_batch_size: int = 16
    warmup_ratio: float = 0.1
    packing: bool = False  # pairs are padded side by side
    log_every: int = 5


# ---------------------------------------------------------------------------------------------
# Pairs


def make_pairs(
    samples: list[dict], scores: dict[tuple[str, int], list[float]], easy_levels, config: DPOConfig
) -> tuple[list[dict], dict]:
    """Preference pairs {unique_id, level, chosen, rejected, chosen_score, rejected_score}, where
    chosen / rejected are {completion, finished, sample_index}.

    Per question, distinct non-empty solutions are ranked by evaluator score (by correctness
    first on easy questions when `easy_use_answers`; `correct` is never read on hard ones). The
    chosen side must be a finished solution with steps and an answer; pair i is the i-th best against the
    i-th worst, kept if the chosen ranks strictly higher and the score gap is at least
    `min_margin` (a correct-vs-incorrect easy pair needs no gap).
    """
    easy_levels = set(easy_levels)
    pairs, stats = [], Counter()
    gaps, all_scores = [], []  # each question's best-vs-worst score gap, when the score decides
    for unique_id, rows in candidates.by_question(samples):
        use_answers = config.easy_use_answers and rows[0]["level"] in easy_levels
        ranked = []
        for row, steps, answer in candidates.distinct(rows, stats):
            score = aggregate_steps(scores[(unique_id, row["sample_index"])], config.aggregation)
            rank = (bool(row["correct"]) if use_answers else 0, score)
            complete = row.get("finished", True) and answer is not None and bool(steps)  # a whole solution
            ranked.append({"row": row, "score": score, "rank": rank, "complete": complete})
            all_scores.append(score)
        ranked.sort(key=lambda c: (c["rank"], -c["row"]["sample_index"]), reverse=True)
        stats["questions"] += 1
        chosen_pool = [c for c in ranked if c["complete"]]
        stats["questions_without_a_whole_solution"] += not chosen_pool
        made = 0
        for i in range(config.pairs_per_question):
            if i >= len(chosen_pool) or i >= len(ranked):
                break
            chosen, rejected = chosen_pool[i], ranked[-1 - i]
            if not chosen["rank"] > rejected["rank"]:
                break
            outcome_decided = chosen["rank"][0] > rejected["rank"][0]
            if not outcome_decided and i == 0:
                gaps.append(chosen["score"] - rejected["score"])
            if not outcome_decided and chosen["score"] - rejected["score"] < config.min_margin:
                stats["pairs_below_margin"] += 1
                break
            pairs.append(
                {
                    "unique_id": unique_id,
                    "level": chosen["row"]["level"],
                    "chosen": _side(chosen["row"]),
                    "rejected": _side(rejected["row"]),
                    "chosen_score": chosen["score"],
                    "rejected_score": rejected["score"],
                }
            )
            made += 1
        stats["pairs"] += made
        stats["questions_paired"] += bool(made)
        stats["questions_with_one_solution"] += len(ranked) < 2
    stats = {
        **dict(stats),
        "min_margin": config.min_margin,
        "score_gap": {
            "questions": len(gaps),
            "max": max(gaps, default=None),
            "median": statistics.median(gaps) if gaps else None,
        },
        "score_range": [min(all_scores, default=None), max(all_scores, default=None)],
    }
    return pairs, stats if pairs else {**stats, "empty_because": empty_because(stats)}


def empty_because(stats: dict) -> str:
    """Why no pair was made (for the DPO stage's error): the margin against the observed gaps."""
    gap, low_high = stats["score_gap"], stats["score_range"]
    if not gap["questions"]:
        return (
            f"no DPO pair: none of the {stats.get('questions', 0)} questions has a whole solution (finished, with"
            f" steps and an answer) ranked above another solution: {stats.get('questions_without_a_whole_solution', 0)}"
            f" have no whole solution, {stats.get('questions_with_one_solution', 0)} fewer than two distinct"
            f" solutions, {stats.get('empty_solutions', 0)} samples are empty; more samples per question"
            " (sampling.num_samples.train), a longer sampling.max_new_tokens, or a stronger SFT policy"
        )
    return (
        f"no DPO pair: no question's best and worst solutions differ by rl.dpo.min_margin = {stats['min_margin']}"
        f" in evaluator score: the largest gap is {gap['max']:.3g} (median {gap['median']:.3g} over "
        f"{gap['questions']} questions) and every score lies in [{low_high[0]:.3g}, {low_high[1]:.3g}]. Lower "
        "rl.dpo.min_margin, or check the evaluator (scores that all sit together mean it has collapsed: see "
        "results/report/evaluators.md)"
    )


def _side(row: dict) -> dict:
    return {"completion": row["completion"], "finished": row.get("finished", True), "sample_index": row["sample_index"]}


def response_example(prompt_ids: list[int], completion: str, finished: bool, tokenizer) -> dict:
    """prompt + completion (+ EOS when the sample ended with one), loss on the completion."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if finished else [])
    return {"input_ids": prompt_ids + ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + ids}


def pair_example(problem: str, pair: dict, tokenizer, max_length: int) -> dict | None:
    """{"chosen": {input_ids, labels}, "rejected": {...}}; None when either side is too long."""
    prompt_ids = encode_prompt(tokenizer, problem)
    sides = {
        side: response_example(prompt_ids, pair[side]["completion"], pair[side]["finished"], tokenizer)
        for side in ("chosen", "rejected")
    }
    if any(len(example["input_ids"]) > max_length for example in sides.values()):
        return None
    return sides


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One padded batch: the chosen sides in rows [0, B), the rejected sides in rows [B, 2B)."""
    flat = [example["chosen"] for example in examples] + [example["rejected"] for example in examples]
    batch = collate(flat, pad_token_id)
    if "ref_logps" in examples[0]:
        batch["ref_logps"] = torch.tensor([example["ref_logps"] for example in examples], dtype=torch.float32)
    return batch


# ---------------------------------------------------------------------------------------------
# Loss


def sequence_logps(model, batch: dict[str, torch.Tensor], average: bool) -> torch.Tensor:
    """Sum (or mean, for IPO) of the labelled tokens' log-probs, one value per row."""
    logits = model(**model_inputs(batch)).logits
    logps, mask = token_logps(logits, batch["labels"])
    total = logps.sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    config: DPOConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards beta * (log pi - log pi_ref) of both sides.

    sigmoid: -(1 - eps) log sigma(beta h) - eps log sigma(-beta h), h the difference of log-ratios;
    ipo: (h - 1 / (2 beta))^2.
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if config.loss_type == "ipo":
        losses = (h - 1 / (2 * config.beta)) ** 2
    else:
        eps = config.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(config.beta * h) - eps * F.logsigmoid(-config.beta * h)
    chosen_rewards = config.beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = config.beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def loss_fn(config: DPOConfig):
    """The training loop's loss over a `collate_pairs` batch, with reward accuracy and margin."""

    def dpo_batch_loss(model, batch):
        logps = sequence_logps(model, batch, average=config.loss_type == "ipo")
        half = logps.shape[0] // 2
        losses, chosen, rejected = dpo_loss(
            logps[:half], logps[half:], batch["ref_logps"][:, 0], batch["ref_logps"][:, 1], config
        )
        return losses.mean(), {
            "reward_accuracy": (chosen > rejected).float().mean().item(),
            "reward_margin": (chosen - rejected).mean().item(),
            "chosen_reward": chosen.mean().item(),
            "rejected_reward": rejected.mean().item(),
        }

    return dpo_batch_loss


@torch.inference_mode()
def reference_logps(
    model, examples: list[dict], pad_token_id: int, config: DPOConfig, batch_size: int
) -> list[list[float]]:
    """[chosen, rejected] log-probs of each pair under `model` (the round's starting policy)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    values = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(examples[start : start + batch_size], pad_token_id).items()}
        with modeling.autocast(device):
            logps = sequence_logps(model, batch, average=config.loss_type == "ipo").float().cpu()
        half = logps.shape[0] // 2
        values += [[float(c), float(r)] for c, r in zip(logps[:half], logps[half:])]
    model.train(was_training)
    return values
