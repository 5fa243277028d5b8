"""PPO against the easy-trained evaluator (the paper's RL route, Sec. 4.2).

Four models: the policy (trained), a value model initialised from the reward model (trained), a
frozen reference policy (the SFT model) and the frozen evaluator (a PRM). Each PPO step:

1. rollouts: the policy samples solutions to a batch of train questions (easy and hard);
2. rewards, per response token (`token_rewards`):
   * outcome: `outcome_reward` x correct at the last token on EASY questions -- graded against
     easy gold answers, the only gold this stage can read -- and `hard_outcome_reward` (a
     constant) on hard ones;
   * evaluator, on every question (`reward: process`): the PRM's per-unit probabilities turned into
     step rewards by `process_rewards` (a drop below the running minimum is penalised, a rise is
     capped at `process_upper_bound`, plus bonuses), each placed at the token that ends its unit;
     or (`reward: outcome`) the evaluator's aggregated solution score at the last token;
   * the stop penalty at the last token: `no_answer_penalty` without a `# Answer` section, or that
     penalty scaled by the authors' graded `stop_penalty_fraction`;
   * minus `kl_coef` x KL estimate on every token (k1, or k1 clamped at 0 as the authors);
3. rewards optionally divided by their std (`whiten_rewards`); GAE advantages (gamma, lambda)
   and returns from the value model; advantages whitened;
4. `ppo_epochs` passes of clipped policy and clipped value losses over minibatches, each model
   through its own `training.Trainer` (the loop SFT and the reward models use: DeepSpeed on GPU,
   plain torch on CPU, the same checkpoints and logs).

The pure pieces (reward shaping, GAE, whitening, losses) are small functions tested exactly.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from easy2hard import evaluator, formats, metrics, modeling, sampling, tracking
from easy2hard.grading import GradingStats
from easy2hard.io import atomic_output
from easy2hard.judge import judge_samples
from easy2hard.training import (
    IGNORE_INDEX,
    TrainConfig,
    Trainer,
    collate,
    latest_checkpoint,
    model_inputs,
    run_fingerprint,
    token_logps,
    world,
)

log = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    steps: int = 12  # PPO steps (rollouts + updates) per round
    prompts_per_step: int = 32  # train questions per rollout batch (easy and hard alike)
    samples_per_prompt: int = 1
    ppo_epochs: int = 2  # passes over each rollout batch
    rollout_top_k: int | None = None  # top-k of the rollouts; None: sampling.top_k (the authors: 50)
    kl_coef: float = 0.01  # per-token KL penalty to the reference policy
    kl_estimator: str = "k1"  # k1: log pi - log pi_ref | k1_clamped: clamped at 0 (the authors)
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2  # policy ratio clip
    clip_range_value: float = 0.2  # value clip around the rollout-time values
    whiten_rewards: bool = False  # divide the per-token rewards by their std over the batch (the authors)
    whiten_advantages: bool = True
    reward: str = "process"  # process: the PRM's step rewards | outcome: the evaluator's solution score at the end
    aggregation: str = "min"  # outcome reward: per-unit scores -> one score (the rule sets rl.aggregation)
    outcome_reward: float = 1.0  # easy questions: reward for a correct final answer (0 otherwise)
    hard_outcome_reward: float = 0.0  # hard questions (no gold answer): a constant (the authors: 0.25)
    process_weight: float = 1.0  # scale of the evaluator's part of the reward (per step, or the outcome score)
    process_upper_bound: float = 0.0  # cap on a step's reward for rising above the running minimum
    running_min_start: float = 1.0  # the running minimum before the first step (the authors: 0.5)
    step_bonus: float = 0.0  # added to every rewarded unit (the return grows with the number of steps)
    total_step_bonus: float = 0.0  # spread evenly over the rewarded units (the authors: 0.25)
    answer_process_reward: bool = True  # the answer unit is rewarded like a step (the authors: steps only)
    stop_penalty: str = "no_answer"  # no_answer: the penalty without an answer section | graded: the authors'
    no_answer_penalty: float = -1.0  # the penalty (graded: times the fraction of `stop_penalty_fraction`)
    snapshot_every: int = 0  # PPO steps between policy snapshots kept for checkpoint selection (0: none)
    seed: int = 0

    def __post_init__(self):
        choices = {
            "reward": ("process", "outcome"),
            "stop_penalty": ("no_answer", "graded"),
            "kl_estimator": ("k1", "k1_clamped"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"rl.ppo.{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")


@dataclass
class PPOPolicyTrainConfig(TrainConfig):
    """rl.ppo.policy_train: the policy's updates (minibatch = global_batch_size rollouts; epochs
    unused: steps x ppo_epochs; checkpoint_every counts PPO steps and covers both models)."""

    learning_rate: float = 5e-5
    epochs: float = 1
    global_batch_size: int = 16
    micro_batch_size: int = 16
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    checkpoint_every: int = 4
    log_every: int = 1


@dataclass
class PPOValueTrainConfig(TrainConfig):
    """rl.ppo.value_train: the value model's updates (same minibatches as the policy's)."""

    learning_rate: float = 1e-4
    epochs: float = 1
    global_batch_size: int = 16
    micro_batch_size: int = 16
    warmup_ratio: float = 0.0
    lr_scheduler: str = "constant"
    checkpoint_every: int = 0
    log_every: int = 1


# ---------------------------------------------------------------------------------------------
# Rewards


def process_rewards(
    unit_scores: list[float],
    upper_bound: float,
    step_bonus: float,
    running_min_start: float = 1.0,
    total_bonus: float = 0.0,
) -> list[float]:
    """Step rewards from the PRM's per-unit probabilities.

    Unit i earns min(p_i - m_{i-1}, upper_bound) + step_bonus + total_bonus / n, where m is the
    running minimum of the scores so far (m_0 = running_min_start). With upper_bound = 0 and no
    bonus the rewards telescope to min(min_i p_i, m_0) - m_0: the return of a solution is its
    min-aggregated PRM score, shifted, and each step is charged exactly for how much it lowers
    that minimum. The authors start at m_0 = 0.5 (a step above 0.5 is never charged) and spread a
    total bonus of 0.25 over the steps (no length incentive); step_bonus pays per step.
    """
    rewards, running_min = [], running_min_start
    spread = total_bonus / len(unit_scores) if unit_scores else 0.0
    for score in unit_scores:
        rewards.append(min(score - running_min, upper_bound) + step_bonus + spread)
        running_min = min(running_min, score)
    return rewards


def stop_penalty_fraction(completion: str) -> float:
    """The authors' graded stop penalty, as a fraction of `no_answer_penalty`: 1 without an answer
    section or with an empty answer; 0 when the answer appears as \\boxed{answer} in the solution,
    0.5 as $answer$ (or $answer.$) in its last step, 0.75 anywhere in its last step; 1 otherwise."""
    body, marker, tail = completion.partition(formats.ANSWER_MARKER)
    answer = tail.strip()
    if not marker or not answer:
        return 1.0
    last_step = body.strip().split(formats.STEP_SEPARATOR)[-1]
    if "\\boxed{" + answer + "}" in body:
        return 0.0
    if f"${answer}$" in last_step or f"${answer}.$" in last_step:
        return 0.5
    return 0.75 if answer in last_step else 1.0


def evaluator_rewards(
    num_tokens: int, unit_ends: list[int], unit_scores: list[float], has_answer: bool, config: PPOConfig
) -> list[float]:
    """The evaluator's part of each response token's reward.

    `unit_scores` are its per-unit scores (steps, then the answer when there is one), empty when
    it could not read the solution: that earns the lowest evaluator reward there is, never a
    better one than a scored solution's, or the policy would learn to write what it cannot read."""
    rewards = [0.0] * num_tokens
    if not unit_scores:
        rewards[-1] = config.process_weight * min(0.0 - config.running_min_start, config.process_upper_bound)
    elif config.reward == "outcome":
        rewards[-1] = config.process_weight * metrics.aggregate_steps(unit_scores, config.aggregation)
    else:
        rewarded = len(unit_scores) - (has_answer and not config.answer_process_reward)
        shaped = process_rewards(
            unit_scores[:rewarded],
            config.process_upper_bound,
            config.step_bonus,
            config.running_min_start,
            config.total_step_bonus,
        )
        for end, reward in zip(unit_ends, shaped):
            rewards[end] += config.process_weight * reward
    return rewards


def terminal_reward(correct: bool | None, completion: str, config: PPOConfig) -> float:
    """Outcome (easy: graded against easy gold; hard, `correct` None: a constant) plus the stop penalty."""
    reward = config.hard_outcome_reward if correct is None else config.outcome_reward * float(correct)
    if config.stop_penalty == "graded":
        return reward + config.no_answer_penalty * stop_penalty_fraction(completion)
    has_answer = formats.parse_solution(completion)[1] is not None
    return reward + (0.0 if has_answer else config.no_answer_penalty)


def token_rewards(
    num_tokens: int,
    unit_ends: list[int],
    unit_scores: list[float],
    correct: bool | None,
    completion: str,
    config: PPOConfig,
) -> list[float]:
    """The score part of each response token's reward (the KL penalty is added later)."""
    has_answer = formats.parse_solution(completion)[1] is not None
    rewards = evaluator_rewards(num_tokens, unit_ends, unit_scores, has_answer, config)
    rewards[-1] += terminal_reward(correct, completion, config)
    return rewards


def unit_end_chars(text: str) -> list[int]:
    """Character index just after each scoring unit of `text` (its steps, then its answer), in the
    units `formats.parse_solution` finds; the answer ends at the end of the text."""
    steps, answer = formats.parse_solution(text)
    body, header, _ = text.rpartition(formats.ANSWER_HEADER)
    if not header:
        body = text
    ends, offset = [], 0
    for piece in body.split(formats.STEP_SEPARATOR):
        if piece.strip():
            ends.append(offset + len(piece.rstrip()))
        offset += len(piece) + len(formats.STEP_SEPARATOR)
    assert len(ends) == len(steps), (text, ends, steps)
    return ends + ([len(text)] if answer is not None else [])


def unit_end_tokens(tokenizer, token_ids: list[int], text: str) -> list[int]:
    """Index of the response token holding the character that ends each unit (the newline after a
    step; the last token for the answer), found on the sampled ids themselves by bisecting
    decoded prefix lengths."""

    @functools.cache
    def decoded_length(i: int) -> int:  # characters in ids[: i + 1]
        return len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True))

    last = len(token_ids) - 1
    return [
        min(bisect.bisect_right(range(len(token_ids)), char, key=decoded_length), last) if char < len(text) else last
        for char in unit_end_chars(text)
    ]


def best_checkpoint(accuracies: dict[int, float]) -> int:
    """The step with the highest validation accuracy; ties go to the later step (more training)."""
    if not accuracies:
        raise ValueError("no checkpoint to choose from")
    return max(accuracies, key=lambda step: (accuracies[step], step))


# ---------------------------------------------------------------------------------------------
# Advantages and losses


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over right-padded [batch, T] sequences."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (masked entries stay 0); without `shift_mean` the
    mean is added back, (x - mean) / std + mean, as the authors whiten rewards (and TRL): the spread
    is normalised, the average reward kept."""
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(variance + eps)
    return (whitened if shift_mean else whitened + mean) * mask


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate of the policy from the reference: k1 = log pi - log pi_ref, or k1
    clamped at 0 (the authors: a token the policy makes less likely than the reference is free)."""
    kl = logps - ref_logps
    return kl.clamp(min=0.0) if estimator == "k1_clamped" else kl


def policy_loss(logps, old_logps, advantages, mask, clip_range) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1 - c, 1 + c))."""
    ratio = torch.exp(logps - old_logps)
    losses = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    clipped = ((ratio - 1).abs() > clip_range).float()
    return masked_mean(losses, mask), {
        "clipfrac": masked_mean(clipped, mask).item(),
        "approx_kl": masked_mean(0.5 * (logps - old_logps) ** 2, mask).item(),
    }


def value_loss(values, old_values, returns, mask, clip_range) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: 0.5 x mean of max((v - R)^2, (v_old + clip(v - v_old) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask), {
        "value_clipfrac": masked_mean((losses > (values - returns) ** 2).float(), mask).item()
    }


# ---------------------------------------------------------------------------------------------
# Rollout batches: prompt + response ids, per-token arrays aligned with `token_logps` (index j
# of a row predicts token j + 1, so response token t of a prompt of length P sits at P + t - 1).

PER_TOKEN = ("old_logps", "old_values", "rewards", "advantages", "returns")


def rollout_example(prompt_ids: list[int], response_ids: list[int]) -> dict:
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids}


def collate_rollouts(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and labels, and each per-token array at its shifted positions."""
    batch = collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples], pad_token_id)
    width = batch["input_ids"].shape[1] - 1
    for key in PER_TOKEN:
        if key not in examples[0]:
            continue
        tensor = torch.zeros(len(examples), width)
        for row, example in enumerate(examples):
            start = len(example["input_ids"]) - len(example[key]) - 1
            tensor[row, start : start + len(example[key])] = torch.tensor(example[key])
        batch[key] = tensor
    return batch


def policy_loss_fn(temperature: float, clip_range: float):
    def loss(model, batch):
        logps, mask = token_logps(model(**model_inputs(batch)).logits, batch["labels"], temperature)
        return policy_loss(logps, batch["old_logps"], batch["advantages"], mask.float(), clip_range)

    return loss


def token_values(model, batch) -> torch.Tensor:
    """The value model's estimate at every position that predicts a next token."""
    return model(**model_inputs(batch)).logits.squeeze(-1)[:, :-1].float()


def value_loss_fn(clip_range: float):
    def loss(model, batch):
        mask = (batch["labels"][:, 1:] != IGNORE_INDEX).float()
        return value_loss(token_values(model, batch), batch["old_values"], batch["returns"], mask, clip_range)

    return loss


# ---------------------------------------------------------------------------------------------
# The rollout loop


@dataclass
class Models:
    policy: object  # trained; starts as the previous round's policy (SFT in round 1)
    value: object  # trained; starts as the reward model (or the previous round's value model)
    reference: object  # frozen: the SFT policy
    reward_model: object  # frozen: the easy-trained PRM
    tokenizer: object


def rollout_sampling(sampling_config: sampling.SamplingConfig, config: PPOConfig, step: int) -> sampling.SamplingConfig:
    """The sampling options of a step's rollouts: `samples_per_prompt`, `rollout_top_k` (the
    sampling config's top-k when None), and a seed of their own per step."""
    top_k = sampling_config.top_k if config.rollout_top_k is None else config.rollout_top_k
    return sampling.SamplingConfig(
        **{
            **sampling_config.__dict__,
            "num_samples": config.samples_per_prompt,
            "seed": config.seed * 7919 + step,
            "top_k": top_k,
        }
    )


def check_batch_sizes(rollouts: int, policy_train: TrainConfig, value_train: TrainConfig, world_size: int) -> None:
    """Minibatches must split a step's rollouts evenly, the same way for both models, and each
    process must get the same number (or accumulation and the schedule would drift, or hang)."""
    problems = []
    if policy_train.global_batch_size != value_train.global_batch_size:
        problems.append("rl.ppo.value_train.global_batch_size must equal rl.ppo.policy_train.global_batch_size")
    if rollouts % policy_train.global_batch_size:
        problems.append(
            f"rl.ppo.prompts_per_step x samples_per_prompt ({rollouts}) must be a multiple of "
            f"rl.ppo.policy_train.global_batch_size ({policy_train.global_batch_size})"
        )
    if rollouts % world_size or policy_train.global_batch_size % world_size:
        problems.append(f"rollouts per step ({rollouts}) and the minibatch must divide among {world_size} processes")
    if problems:
        raise ValueError("config: " + "; ".join(problems))


class PPOTrainer:
    def __init__(
        self,
        models: Models,
        questions: list[dict],
        easy_gold: dict[str, str],
        config: PPOConfig,
        policy_train: TrainConfig,
        value_train: TrainConfig,
        sampling_config: sampling.SamplingConfig,
        grading: dict,
        score_batch_size: int,
    ):
        self.config, self.questions, self.easy_gold, self.grading = config, questions, easy_gold, grading
        self.sampling_config, self.score_batch_size = sampling_config, score_batch_size
        self.sampling_usage = sampling.BackendUsage()  # rollouts of this process, by back end
        self.grading_stats = GradingStats()  # their grading (easy questions), timeouts included
        self.tokenizer = models.tokenizer
        self.reference, self.reward_model = models.reference, models.reward_model
        rollouts = config.prompts_per_step * config.samples_per_prompt
        check_batch_sizes(rollouts, policy_train, value_train, world()[1])
        self.minibatches = rollouts // policy_train.global_batch_size
        total = config.steps * config.ppo_epochs * self.minibatches
        pad = self.tokenizer.pad_token_id
        self.policy = Trainer(
            models.policy,
            policy_train,
            total,
            pad,
            policy_loss_fn(sampling_config.temperature, config.clip_range),
            collate_rollouts,
        )
        self.value = Trainer(
            models.value, value_train, total, pad, value_loss_fn(config.clip_range_value), collate_rollouts
        )
        self.micro_batch_size = policy_train.micro_batch_size
        for frozen in (self.reference, self.reward_model):
            frozen.to(self.policy.device).eval().requires_grad_(False)

    # -- rollouts ------------------------------------------------------------------------------

    def rollout_questions(self, step: int) -> list[dict]:
        rng = random.Random(f"{self.config.seed}-{step}")
        count = self.config.prompts_per_step
        pool = self.questions
        chosen = rng.sample(pool, count) if count <= len(pool) else [rng.choice(pool) for _ in range(count)]
        return chosen[self.policy.rank :: self.policy.world_size]

    @torch.inference_mode()
    def rollouts(self, step: int) -> tuple[list[dict], dict]:
        """Sample, grade (easy only), score with the PRM, and compute advantages for one step."""
        questions = self.rollout_questions(step)
        policy = self.policy.module
        policy.eval()
        prompts = [sampling.encode_prompt(self.tokenizer, q["problem"]) for q in questions]
        config = rollout_sampling(self.sampling_config, self.config, step)
        groups = sampling.generate(
            policy, self.tokenizer, prompts, config, desc=f"rollouts, step {step}", usage=self.sampling_usage
        )
        samples = []
        for question, prompt, group in zip(questions, prompts, groups):
            for index, sample in enumerate(group):
                samples.append(
                    {
                        "unique_id": question["unique_id"],
                        "problem": question["problem"],
                        "prompt_ids": prompt,
                        "sample_index": index,
                        "completion": sample["text"],
                        "token_ids": sample["token_ids"],
                        "finished": sample["finished"],
                    }
                )
        graded = judge_samples(
            [{"unique_id": s["unique_id"], "completion": s["completion"]} for s in samples],
            self.easy_gold,
            self.grading["timeout"],
            self.grading["workers"],
            cluster=False,
            mode=self.grading["mode"],
            stats=self.grading_stats,
        )
        unit_scores = self._unit_scores(samples)
        examples = []
        stats = {
            "reward": [],
            "kl": [],
            "easy_accuracy": [],
            "evaluator_reward": [],
            "no_answer_rate": [],
            "response_tokens": [],
        }
        for sample, judged, scores in zip(samples, graded, unit_scores):
            num_tokens, completion = len(sample["token_ids"]), sample["completion"]
            has_answer = formats.parse_solution(completion)[1] is not None
            ends = unit_end_tokens(self.tokenizer, sample["token_ids"], completion) if scores else []
            rewards = token_rewards(num_tokens, ends, scores, judged["correct"], completion, self.config)
            examples.append({**rollout_example(sample["prompt_ids"], sample["token_ids"]), "score_rewards": rewards})
            if judged["correct"] is not None:
                stats["easy_accuracy"].append(float(judged["correct"]))
            # The evaluator's share: everything but the last token's outcome and stop penalty.
            stats["evaluator_reward"].append(sum(rewards) - terminal_reward(judged["correct"], completion, self.config))
            stats["no_answer_rate"].append(float(not has_answer))
            stats["reward"].append(sum(rewards))
            stats["response_tokens"].append(len(sample["token_ids"]))
        self._advantages(examples, stats)
        policy.train()
        means = {name: (sum(values) / len(values) if values else float("nan")) for name, values in stats.items()}
        # Nothing to learn from: every rollout earned the same reward (before the KL penalty).
        same_reward = max(stats["reward"]) - min(stats["reward"]) <= 1e-9
        return examples, {**means, "num_rollouts": len(examples), "same_reward_for_all": same_reward}

    def _unit_scores(self, samples: list[dict]) -> list[list[float]]:
        """PRM per-unit probabilities; a solution the PRM cannot align gets none (and no process reward)."""
        solutions = [
            {"problem": s["problem"], "completion": s["completion"], "finished": s["finished"]} for s in samples
        ]
        try:
            return evaluator.score_solutions(self.reward_model, self.tokenizer, solutions, self.score_batch_size)
        except evaluator.AlignmentError:
            scores = []
            for solution in solutions:
                try:
                    scores += evaluator.score_solutions(self.reward_model, self.tokenizer, [solution], 1)
                except evaluator.AlignmentError as error:
                    log.warning("no process reward for an unaligned solution: %s", error)
                    scores.append([])
            return scores

    def _advantages(self, examples: list[dict], stats: dict) -> None:
        """Old log-probs, reference log-probs and values in batches; KL-penalised rewards; GAE."""
        device, temperature = self.policy.device, self.sampling_config.temperature
        autocast = modeling.autocast(device)
        for start in range(0, len(examples), self.micro_batch_size):
            chunk = examples[start : start + self.micro_batch_size]
            batch = {k: v.to(device) for k, v in collate_rollouts(chunk, self.tokenizer.pad_token_id).items()}
            with autocast:
                logps, mask = token_logps(
                    self.policy.module(**model_inputs(batch)).logits, batch["labels"], temperature
                )
                ref_logps, _ = token_logps(self.reference(**model_inputs(batch)).logits, batch["labels"], temperature)
                values = token_values(self.value.module, batch)
            for row, example in enumerate(chunk):
                keep = mask[row]
                example["old_logps"] = logps[row][keep].float().cpu().tolist()
                example["old_values"] = values[row][keep].float().cpu().tolist()
                kl = kl_penalty(logps[row][keep], ref_logps[row][keep], self.config.kl_estimator).float().cpu()
                example["rewards"] = (torch.tensor(example.pop("score_rewards")) - self.config.kl_coef * kl).tolist()
                stats["kl"].append(float(kl.sum()))
        batch = collate_rollouts(examples, self.tokenizer.pad_token_id)
        mask = (batch["labels"][:, 1:] != IGNORE_INDEX).float()
        rewards = whiten(batch["rewards"], mask, shift_mean=False) if self.config.whiten_rewards else batch["rewards"]
        advantages, returns = gae(rewards, batch["old_values"], mask, self.config.gamma, self.config.lam)
        if self.config.whiten_advantages:
            advantages = whiten(advantages, mask)
        for row, example in enumerate(examples):
            keep = mask[row].bool()
            example["advantages"] = advantages[row][keep].tolist()
            example["returns"] = returns[row][keep].tolist()
            del example["rewards"]

    # -- optimisation --------------------------------------------------------------------------

    def update(self, examples: list[dict], step: int) -> dict:
        rng = random.Random(f"{self.config.seed}-update-{step}")
        size = math.ceil(len(examples) / self.minibatches)
        records = []
        for _ in range(self.config.ppo_epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for start in range(0, len(order), size):
                minibatch = [examples[i] for i in order[start : start + size]]
                policy_record = self.policy.step(minibatch, local=True)
                value_record = self.value.step(minibatch, local=True)
                records.append(
                    {
                        "policy_loss": policy_record["loss"],
                        "value_loss": value_record["loss"],
                        "clipfrac": policy_record["clipfrac"],
                        "approx_kl": policy_record["approx_kl"],
                        "value_clipfrac": value_record["value_clipfrac"],
                        "lr": policy_record["lr"],
                    }
                )
        return {key: sum(r[key] for r in records) / len(records) for key in records[0]}

    def snapshot(self, snapshot_dir: str, step: int) -> None:
        """The policy after `step` PPO steps, a model folder of its own (rank 0; written atomically).
        On GPU in bf16, the precision it is sampled in (a 7b snapshot: 13.5 GB instead of 27)."""
        if self.policy.rank == 0:
            module = self.policy.module
            state = (
                {name: tensor.to(torch.bfloat16) for name, tensor in module.state_dict().items()}
                if self.policy.device.type == "cuda"
                else None
            )
            with atomic_output(Path(snapshot_dir) / f"step_{step:06d}", directory=True) as tmp:
                module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)

    def keep_snapshots_until(self, snapshot_dir: str, done: int) -> None:
        """Snapshots belong to the run being resumed: those after its last checkpoint (or all of them,
        when it starts over, e.g. after a config change) are removed."""
        if self.policy.rank == 0:
            for folder in Path(snapshot_dir).glob("step_*"):
                if int(folder.name.removeprefix("step_")) > done:
                    shutil.rmtree(folder)

    def train(
        self,
        checkpoint_dir: str | None,
        fingerprint_extra: dict,
        snapshot_dir: str | None = None,
        tracker: tracking.Tracker = tracking.Tracker(),
    ) -> tuple[object, object, list[dict]]:
        policy_dir = f"{checkpoint_dir}/policy" if checkpoint_dir else None
        value_dir = f"{checkpoint_dir}/value" if checkpoint_dir else None
        fingerprint = run_fingerprint(
            self.policy.config,
            [{"questions": [q["unique_id"] for q in self.questions]}],
            type(self.policy.engine).__name__,
            {**fingerprint_extra, "ppo": self.config.__dict__},
        )
        if checkpoint_dir and latest_checkpoint(policy_dir) != latest_checkpoint(value_dir):
            # Killed between saving the two models: no consistent state to resume; start over.
            log.warning("%s: policy and value checkpoints are from different steps; starting over", checkpoint_dir)
            if self.policy.rank == 0:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
        done, history, _ = self.policy.resume(policy_dir, fingerprint)
        if done:
            self.value.resume(value_dir, fingerprint)
        if snapshot_dir:
            self.keep_snapshots_until(snapshot_dir, done)
        start = time.perf_counter()
        progress = tqdm(
            range(done + 1, self.config.steps + 1),
            desc="ppo",
            initial=done,
            total=self.config.steps,
            disable=self.policy.rank != 0,
        )
        for step in progress:
            examples, rollout_stats = self.rollouts(step)
            record = {
                "step": step,
                **rollout_stats,
                **self.update(examples, step),
                "elapsed_s": round(time.perf_counter() - start, 3),
            }
            history.append(record)
            tracker.log(record)
            if record["same_reward_for_all"]:
                log.warning(
                    "PPO step %d: all %d rollouts earned the same reward (%.4g): no reward signal, the update "
                    "follows the KL penalty and the value loss only",
                    step,
                    record["num_rollouts"],
                    record["reward"],
                )
            progress.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.3f}")
            if (
                snapshot_dir
                and self.config.snapshot_every
                and step % self.config.snapshot_every == 0
                and step < self.config.steps
            ):  # the last step is the round's policy itself
                self.snapshot(snapshot_dir, step)
            every = self.policy.config.checkpoint_every
            if checkpoint_dir and every and step % every == 0 and step < self.config.steps:
                self.value.checkpoint(value_dir, step, history, fingerprint)
                self.policy.checkpoint(policy_dir, step, history, fingerprint)
        tracker.close()
        return self.policy.finish(), self.value.finish(), history
