"""ReST-EM (Singh et al., 2023) against an easy-trained evaluator: sample from the current policy
on every train question, keep the solutions that pass the filter, fine-tune on them, repeat.

The filter is the only place where the algorithm meets supervision. Easy questions may use their
gold answer (the `correct` field that `grade_train` wrote from easy gold only); hard questions are
selected by evaluator score alone: `select` decides easy/hard from the level and never reads
`correct` for a hard row, so even a graded file that carried hard outcomes could not leak them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from easy2hard import candidates
from easy2hard.metrics import AGGREGATIONS, aggregate_steps
from easy2hard.training import TrainConfig

EASY_FILTERS = ("answer", "score", "answer_and_score")
HARD_FILTERS = ("top_k", "threshold", "top_k_threshold", "none")


@dataclass
class RestEmConfig:
    easy_filter: str = "answer"  # answer: gold answer correct | score: evaluator only | answer_and_score: both
    hard_filter: str = "top_k"  # top_k | threshold | top_k_threshold | none (hard questions not used)
    top_k: int = 1  # solutions kept per question by score (top_k filters)
    threshold: float = 0.5  # minimum aggregated evaluator score (threshold filters, answer_and_score)
    max_per_question: int = 4  # cap per question, so easy questions do not swamp the kept set
    aggregation: str = "min"  # step aggregation giving one score per solution

    def __post_init__(self):
        for name, value, allowed in [
            ("easy_filter", self.easy_filter, EASY_FILTERS),
            ("hard_filter", self.hard_filter, HARD_FILTERS),
            ("aggregation", self.aggregation, AGGREGATIONS),
        ]:
            if value not in allowed:
                raise ValueError(f"rest_em.{name}: {value!r} is not one of {list(allowed)}")


@dataclass
class RestEmTrainConfig(TrainConfig):
    """rl.rest_em.train: each round's fine-tuning on the kept solutions."""

    learning_rate: float = 5e-4
    epochs: float = 1
    global_batch_size: int = 16
    micro_batch_size: int = 16


def _score_filter(scored: list[dict], mode: str, config: RestEmConfig) -> list[dict]:
    """Scored solutions (best first) that pass a score-only filter."""
    if mode == "none":
        return []
    if mode in ("threshold", "top_k_threshold"):
        scored = [c for c in scored if c["score"] >= config.threshold]
    if mode in ("top_k", "top_k_threshold"):
        scored = scored[: config.top_k]
    return scored


def select(
    samples: list[dict], scores: dict[tuple[str, int], list[float]], easy_levels, config: RestEmConfig
) -> tuple[list[dict], dict]:
    """The kept solutions ({unique_id, level, sample_index, steps, answer, score}) and counts.

    `samples` are graded train rows (unique_id, level, sample_index, completion, finished, and
    `correct` for easy rows); `scores` maps (unique_id, sample_index) to the evaluator's per-unit
    scores. Only finished solutions with an answer section are candidates; identical solutions
    count once.
    """
    easy_levels = set(easy_levels)
    kept, stats = [], Counter()
    for unique_id, rows in candidates.by_question(samples):
        easy = rows[0]["level"] in easy_levels
        group = "easy" if easy else "hard"
        stats[f"{group}_questions"] += 1
        scored = []
        for row, steps, answer in candidates.distinct(rows, stats):
            # A kept solution becomes an SFT example: it needs steps and an answer section.
            skipped = (
                "unfinished_skipped"
                if not row.get("finished", True)
                else "no_answer_skipped"
                if answer is None
                else "no_steps_skipped"
                if not steps
                else None
            )
            if skipped:
                stats[skipped] += 1
                continue
            if easy and config.easy_filter != "score" and not row["correct"]:
                continue  # `correct` is read for easy rows only
            score = aggregate_steps(scores[(unique_id, row["sample_index"])], config.aggregation)
            scored.append(
                {
                    "unique_id": unique_id,
                    "level": row["level"],
                    "sample_index": row["sample_index"],
                    "steps": steps,
                    "answer": answer,
                    "score": score,
                }
            )
        scored.sort(key=lambda c: (-c["score"], c["sample_index"]))
        if not easy:
            chosen = _score_filter(scored, config.hard_filter, config)
        elif config.easy_filter == "answer":
            chosen = scored
        elif config.easy_filter == "answer_and_score":
            chosen = [c for c in scored if c["score"] >= config.threshold]
        else:
            chosen = _score_filter(scored, config.hard_filter, config)
        chosen = chosen[: config.max_per_question]
        stats[f"{group}_kept"] += len(chosen)
        stats[f"{group}_questions_kept"] += bool(chosen)
        kept += chosen
    stats = {**dict(stats), "filter": asdict(config)}
    return kept, stats if kept else {**stats, "empty_because": empty_because(stats)}


def empty_because(stats: dict) -> str:
    """Why the filter kept nothing (for the error of the round's training stage)."""
    get = lambda key: stats.get(key, 0)  # noqa: E731
    easy_rule = {
        "answer": "graded correct",
        "score": f"hard filter {stats['filter']['hard_filter']}",
        "answer_and_score": f"graded correct with score >= {stats['filter']['threshold']}",
    }
    return (
        f"no solution passed the ReST-EM filter: 0 kept of {get('easy_questions')} easy questions (easy_filter "
        f"{stats['filter']['easy_filter']}: {easy_rule[stats['filter']['easy_filter']]}) and of "
        f"{get('hard_questions')} hard questions (hard_filter {stats['filter']['hard_filter']}); samples skipped: "
        f"{get('unfinished_skipped')} unfinished, {get('no_answer_skipped')} without an answer section, "
        f"{get('no_steps_skipped')} without steps, {get('empty_solutions')} empty. More samples per question "
        "(sampling.num_samples.train), a longer sampling.max_new_tokens, or a looser rl.rest_em.filter"
    )
