"""Training data for the evaluators (reward models), built from easy supervision only.

An evaluator example is a solution cut into scoring units -- its steps, then its answer section
when it has one -- with a label (1.0 / 0.0, or a soft value) or None for each unit:

    {"unique_id", "problem", "steps": [...], "answer": str | None,
     "labels": [float | None per step] + [float | None for the answer, if any], "kind": "prm" | "orm"}

ORM examples label every unit with the final-answer outcome; PRM examples label the steps a
human (PRM800K) or the Monte-Carlo rollouts (Math-Shepherd style) judged.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from easy2hard import formats, prm800k_data, synthetic

# ---------------------------------------------------------------------------------------------
# ORM: outcome labels, balanced per question


@dataclass
class BalanceStats:
    unscorable_dropped: int = 0  # empty solutions: no step and no answer to put a label on
    questions_in: int = 0
    questions_kept: int = 0
    samples_in: int = 0
    duplicates_dropped: int = 0
    dropped_all_correct: int = 0  # questions with no negative
    dropped_all_wrong: int = 0  # questions with no positive
    downsampled: int = 0  # majority samples removed to respect the ratio
    positives: int = 0
    negatives: int = 0

    def empty_because(self) -> str:
        """Why no question was kept (for the error of a stage that finds no ORM example)."""
        return (
            f"no easy train question has both a correct and an incorrect sample: of {self.questions_in} graded"
            f" questions, {self.dropped_all_wrong} have no correct sample and {self.dropped_all_correct} no"
            f" incorrect one ({self.samples_in} samples kept, {self.unscorable_dropped} without steps or answer"
            " dropped); the policy must solve some easy train problems sometimes: more samples per question"
            " (sampling.num_samples.train), a stronger SFT policy, more easy train problems, or the"
            " human-written solutions as positives (evaluators.orm.reference_solutions)"
        )


def balance_orm(samples: list[dict], max_ratio: float, seed: int) -> tuple[list[dict], BalanceStats]:
    """Per question: de-duplicate identical solutions, drop questions without both classes, keep
    the minority class whole and down-sample the majority to at most `max_ratio` times it.

    `samples` are graded rows ({unique_id, completion, correct: bool}); rows with correct None
    (hard questions, which have no gold answer) are ignored. Deterministic for a seed.
    """
    stats = BalanceStats()
    by_question: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        if sample.get("correct") is None:
            continue
        if _num_units(sample["completion"]) == 0:
            stats.unscorable_dropped += 1
            continue
        by_question[sample["unique_id"]].append(sample)
        stats.samples_in += 1
    stats.questions_in = len(by_question)
    kept = []
    for unique_id in sorted(by_question):
        unique = {}
        for sample in by_question[unique_id]:
            unique.setdefault(sample["completion"].strip(), sample)
        stats.duplicates_dropped += len(by_question[unique_id]) - len(unique)
        positives = [s for s in unique.values() if s["correct"]]
        negatives = [s for s in unique.values() if not s["correct"]]
        if not negatives:
            stats.dropped_all_correct += 1
            continue
        if not positives:
            stats.dropped_all_wrong += 1
            continue
        rng = random.Random(f"{seed}-{unique_id}")
        minority, majority = sorted([positives, negatives], key=len)
        limit = int(max_ratio * len(minority))
        if len(majority) > limit:
            stats.downsampled += len(majority) - limit
            majority = rng.sample(majority, limit)
        chosen = sorted(minority + majority, key=lambda s: s.get("sample_index", 0))
        stats.questions_kept += 1
        stats.positives += sum(bool(s["correct"]) for s in chosen)
        stats.negatives += sum(not s["correct"] for s in chosen)
        kept += chosen
    return kept, stats


def reference_samples(questions: list[dict]) -> list[dict]:
    """Each supervised question's human-written solution as one more correct sample (evaluators.orm.
    reference_solutions): a question the policy never solves still gives the ORM a positive, at
    the price of positives in the dataset's style rather than the policy's."""
    return [
        {
            "unique_id": q["unique_id"],
            "sample_index": -1,
            "correct": True,
            "completion": formats.format_solution(q["steps"], q["answer"]),
        }
        for q in questions
        if q.get("steps") and q.get("answer") is not None
    ]


def _num_units(completion: str) -> int:
    steps, answer = formats.parse_solution(completion)
    return len(steps) + (answer is not None)


def orm_example(sample: dict, problem: str) -> dict:
    steps, answer = formats.parse_solution(sample["completion"])
    units = len(steps) + (answer is not None)
    return {
        "unique_id": sample["unique_id"],
        "problem": problem,
        "steps": steps,
        "answer": answer,
        "labels": [float(bool(sample["correct"]))] * units,
        "kind": "orm",
    }


# ---------------------------------------------------------------------------------------------
# PRM from human step labels (PRM800K)


def prm800k_examples(
    records: list[dict], levels_by_problem: dict[str, int | None], easy_levels, test_problems: set[str], source: str
) -> tuple[list[dict], Counter]:
    """Examples from PRM800K phase-1/phase-2 records (the authors' reward-model recipe).

    Along the labeller's path (`prm800k_data.walk`: the chosen, human-written or only completion
    of each step), every rated completion at a step becomes an example: the path so far as
    unlabelled units, the completion's unit(s) labelled 1 if rating >= 0, 0 if -1; null ratings
    are skipped, identical (problem, prefix, completion) texts used once. Test problems and MATH
    problems of hard levels are dropped; problems not in MATH are kept.
    """
    counts, seen, examples = Counter(), set(), []
    for number, problem, steps in prm800k_data.usable_records(
        records, levels_by_problem, easy_levels, test_problems, source, counts
    ):
        for step_number, prefix, step in prm800k_data.walk(steps):
            for completion in step["completions"]:
                rating = completion.get("rating")
                if rating is None:
                    counts["null ratings skipped"] += 1
                    continue
                text = prm800k_data.normalize_completion(completion.get("text") or "")
                if not text:  # the authors stop reading a step's completions at an empty one
                    counts["empty completions (the step's remaining completions skipped)"] += 1
                    break
                key = (problem.strip(), tuple(prefix), text)
                if key in seen:
                    counts["duplicates dropped"] += 1
                    continue
                seen.add(key)
                examples.append(_prm_example(f"prm800k/{number}/{step_number}", problem, prefix, text, rating))
    counts["examples"] = len(examples)
    return examples, counts


def _prm_example(unique_id: str, problem: str, prefix: list[str], text: str, rating: int) -> dict:
    """Prefix steps unlabelled; the rated completion's units (a step, and the answer section
    when the completion ends the solution) carry its label."""
    steps, answer = formats.parse_solution(formats.STEP_SEPARATOR.join(prefix + [text]))
    prefix_units = len(formats.parse_solution(formats.STEP_SEPARATOR.join(prefix))[0]) if prefix else 0
    label = 1.0 if rating >= 0 else 0.0
    units = len(steps) + (answer is not None)
    return {
        "unique_id": unique_id,
        "problem": problem,
        "steps": steps,
        "answer": answer,
        "labels": [None] * prefix_units + [label] * (units - prefix_units),
        "kind": "prm",
    }


# ---------------------------------------------------------------------------------------------
# PRM from automatic step labels (Math-Shepherd style Monte-Carlo estimates)


def rollout_prefixes(sample: dict) -> list[str]:
    """Solution prefixes (steps 1..i, for every step but the answer) to roll out from."""
    steps, _ = formats.parse_solution(sample["completion"])
    return [formats.STEP_SEPARATOR.join(steps[: i + 1]) for i in range(len(steps))]


def step_label(outcomes: list[bool], estimate: str) -> float:
    """Hard estimate: 1 if any rollout reached the gold answer; soft: the fraction that did."""
    if not outcomes:
        raise ValueError("a step label needs at least one rollout")
    if estimate == "hard":
        return float(any(outcomes))
    if estimate == "soft":
        return sum(outcomes) / len(outcomes)
    raise ValueError(f"unknown estimate {estimate!r} (hard | soft)")


def auto_prm_example(sample: dict, problem: str, rollout_outcomes: list[list[bool]], estimate: str) -> dict:
    """A sampled solution with each step labelled by its rollouts and the answer by the grader."""
    steps, answer = formats.parse_solution(sample["completion"])
    if len(rollout_outcomes) != len(steps):
        raise ValueError(f"{sample['unique_id']}: {len(rollout_outcomes)} rollout groups for {len(steps)} steps")
    labels = [step_label(outcomes, estimate) for outcomes in rollout_outcomes]
    if answer is not None:
        labels.append(float(bool(sample["correct"])))
    return {
        "unique_id": sample["unique_id"],
        "problem": problem,
        "steps": steps,
        "answer": answer,
        "labels": labels,
        "kind": "prm",
    }


# ---------------------------------------------------------------------------------------------
# PRM from the synthetic task's step labeller (the offline stand-in for human labels)


def labeller_examples(samples: list[dict], supervised: dict[str, dict], easy_levels) -> tuple[list[dict], Counter]:
    """One example per distinct sampled solution of a supervised question (`supervised`: unique_id
    -> problem, level), labelled by `synthetic.label_steps`; samples of other questions (the
    hard ones) are skipped, and the labeller itself refuses a level outside `easy_levels`."""
    examples, counts, seen = [], Counter(), set()
    for sample in samples:
        question = supervised.get(sample["unique_id"])
        key = (sample["unique_id"], sample["completion"].strip())
        if question is None or key in seen:
            continue
        seen.add(key)
        steps, answer = formats.parse_solution(sample["completion"])
        if not steps:
            counts["solutions without steps"] += 1
            continue
        labels = synthetic.label_steps(question["problem"], question["level"], steps, answer, easy_levels)
        examples.append(
            {
                "unique_id": sample["unique_id"],
                "problem": question["problem"],
                "steps": steps,
                "answer": answer,
                "labels": labels,
                "kind": "prm",
            }
        )
        counts["solutions with a wrong step" if 0.0 in labels else "solutions without a wrong step"] += 1
    counts.update(questions=len({example["unique_id"] for example in examples}), solutions=len(examples))
    return examples, counts


# ---------------------------------------------------------------------------------------------
# OPRM: a mixture


def mix(prm: list[dict], orm: list[dict], prm_fraction: float, orm_fraction: float, seed: int) -> list[dict]:
    """A seeded sample of each source (fractions in [0, 1]), shuffled together."""
    rng = random.Random(seed)
    chosen = rng.sample(prm, round(prm_fraction * len(prm))) + rng.sample(orm, round(orm_fraction * len(orm)))
    rng.shuffle(chosen)
    return chosen


def summarize(examples: list[dict]) -> dict:
    labels = [label for example in examples for label in example["labels"] if label is not None]
    return {
        "examples": len(examples),
        "problems": len({example["problem"] for example in examples}),
        "labelled_units": len(labels),
        "positive_fraction": round(sum(labels) / len(labels), 4) if labels else None,
        "kinds": dict(Counter(example["kind"] for example in examples)),
    }
