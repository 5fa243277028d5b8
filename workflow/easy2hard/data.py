"""Problem loaders and the paper's easy/hard split.

Every loader returns rows in the PRM800K ``math_splits`` schema:
``problem, solution, answer, subject, level, unique_id``.

The split (``split_problems``) is where hard-level gold answers are cut off: hard train problems
keep only the question, valid/test questions go to the samplers without answers, and the gold
answers of valid/test go to separate records that only the evaluation stage reads.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from easy2hard import formats, synthetic
from easy2hard.io import DataError, read_jsonl

log = logging.getLogger(__name__)

QUESTION_FIELDS = ("unique_id", "problem", "level", "subject")


def load_math_jsonl(path: str) -> list[dict]:
    """MATH / MATH500 in the PRM800K math_splits JSONL schema, from a local file."""
    rows = read_jsonl(path, required=("problem", "level", "unique_id"))
    for line, row in enumerate(rows, start=1):
        _check_types(row, f"{path}: row {line}")
    return rows


def load_hf_math(name: str, split: str, config: str | None = None) -> list[dict]:
    """A MATH-style dataset from the Hugging Face hub (needs network or a local HF cache).

    Accepts the MATH-500 schema (HuggingFaceH4/MATH-500) and the original Hendrycks schema
    (``type`` for the subject, ``level`` as "Level N", answer only inside ``\\boxed{}``).
    """
    import datasets  # imported lazily: the offline default never touches the hub

    dataset = datasets.load_dataset(name, config, split=split)
    rows = []
    for index, record in enumerate(dataset):
        level = record.get("level")
        if isinstance(level, str):
            match = re.search(r"\d+", level)
            level = int(match.group()) if match else None
        solution = record.get("solution")
        row = {
            "problem": record["problem"],
            "solution": solution,
            "answer": record.get("answer") or (formats.last_boxed(solution) if solution else None),
            "subject": record.get("subject") or record.get("type") or "unknown",
            "level": level,
            "unique_id": record.get("unique_id") or "/".join(filter(None, (name, config, split, str(index)))),
        }
        _check_types(row, f"{name}[{split}] row {index}")
        rows.append(row)
    return rows


def _check_types(row: dict, where: str) -> None:
    if not isinstance(row.get("problem"), str) or not row["problem"].strip():
        raise DataError(f"{where}: field 'problem' must be a non-empty string")
    level = row.get("level")
    if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
        raise DataError(f"{where}: field 'level' must be an integer or null, got {level!r}")
    for key in ("solution", "answer", "subject"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise DataError(f"{where}: field '{key}' must be a string or null, got {type(row[key]).__name__}")
    if not isinstance(row.get("unique_id"), str):
        raise DataError(f"{where}: field 'unique_id' must be a string")
    steps = row.get("steps")
    if steps is not None and (
        not isinstance(steps, list) or not steps or not all(isinstance(step, str) and step.strip() for step in steps)
    ):
        raise DataError(f"{where}: field 'steps' must be a non-empty list of non-empty strings or absent")


def load_source(data_config: dict) -> tuple[list[dict], list[dict]]:
    """(train pool, test set) for the configured source."""
    source = data_config["source"]
    if source == "synthetic":
        section = data_config["synthetic"]
        style = {"style": section["style"]} if "style" in section else {}
        return synthetic.generate_splits(
            section["num_train"], section["num_test"], section["seed"], section.get("max_value"), **style
        )
    if source == "math_jsonl":
        section = data_config["math_jsonl"]
        return load_math_jsonl(section["train"]), load_math_jsonl(section["test"])
    if source == "huggingface":
        section = data_config["huggingface"]
        # A list of configs is concatenated (e.g. the seven subject configs of hendrycks_math).
        train_configs = section.get("train_config")
        if not isinstance(train_configs, list):
            train_configs = [train_configs]
        train = [
            row for name in train_configs for row in load_hf_math(section["train_name"], section["train_split"], name)
        ]
        test = load_hf_math(section["test_name"], section["test_split"], section.get("test_config"))
        return train, test
    raise DataError(f"config: field 'data.source': unknown source {source!r}")


def stratified_subset(rows: list[dict], per_level: list[int], seed: int, field_name: str) -> list[dict]:
    """A fixed subset: ``per_level[i]`` rows of level i + 1, subjects taken in turn within a level
    (each subject's rows in a seeded order), so that a small run still spans the subjects.
    Rows without a level are left out; a level with too few rows is an error naming `field_name`."""
    by_cell = defaultdict(list)
    for row in sorted(rows, key=lambda row: row["unique_id"]):
        if row.get("level") is not None:
            by_cell[(row["level"], row.get("subject") or "")].append(row)
    rng = random.Random(seed)
    for cell in sorted(by_cell):
        rng.shuffle(by_cell[cell])
    chosen = []
    for level, count in enumerate(per_level, start=1):
        queues = [by_cell[cell] for cell in sorted(by_cell) if cell[0] == level]
        available = sum(map(len, queues))
        if count > available:
            raise DataError(
                f"config: field '{field_name}' asks for {count} level-{level} problems, the source has {available}"
            )
        taken = []
        while len(taken) < count:
            for queue in queues:
                if queue and len(taken) < count:
                    taken.append(queue.pop(0))
        chosen += taken
    return chosen


def apply_subset(train_pool: list[dict], test: list[dict], subset: dict | None) -> tuple[list[dict], list[dict]]:
    """``data.subset`` (a small fixed run on a large source), or the rows unchanged without it."""
    if not subset:
        return train_pool, test
    return (
        stratified_subset(train_pool, subset["train_per_level"], subset["seed"], "data.subset.train_per_level"),
        stratified_subset(test, subset["test_per_level"], subset["seed"], "data.subset.test_per_level"),
    )


# ---------------------------------------------------------------------------------------------
# Splitting


@dataclass
class Split:
    train_easy: list[dict]  # questions with reference steps and gold answers
    train_hard: list[dict]  # questions only
    valid: list[dict]  # questions only
    test: list[dict]  # questions only
    valid_gold: list[dict]  # {unique_id, level, subject, answer}: evaluation only
    test_gold: list[dict]
    # Hard train questions with reference steps and gold answers: read by the oracle stages only
    # (the "Full" upper bounds), never by an easy-to-hard stage.
    train_hard_oracle: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def stratified_sample(pool: list[dict], reference: list[dict], size: int, seed: int) -> list[dict]:
    """`size` rows of `pool` whose subject x level counts follow `reference` (largest remainder)."""
    target = Counter((row["subject"], row["level"]) for row in reference)
    total = sum(target.values())
    if total == 0:
        raise DataError("cannot stratify a validation set on an empty test set")
    if size > len(pool):
        raise DataError(f"validation size {size} exceeds the {len(pool)} usable train problems")
    quotas = {cell: size * count / total for cell, count in target.items()}
    counts = {cell: int(quota) for cell, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda cell: (counts[cell] - quotas[cell], str(cell)))
    for cell in by_remainder[: size - sum(counts.values())]:
        counts[cell] += 1
    by_cell = defaultdict(list)
    for row in pool:
        by_cell[(row["subject"], row["level"])].append(row)
    rng = random.Random(seed)
    chosen = []
    for cell in sorted(counts, key=str):
        candidates = by_cell.get(cell, [])
        if len(candidates) < counts[cell]:
            raise DataError(f"only {len(candidates)} train problems for subject/level {cell}, need {counts[cell]}")
        chosen += rng.sample(candidates, counts[cell])
    return chosen


def question(row: dict) -> dict:
    return {key: row[key] for key in QUESTION_FIELDS}


def gold(row: dict) -> dict:
    return {"unique_id": row["unique_id"], "level": row["level"], "subject": row["subject"], "answer": row["answer"]}


def split_problems(
    train_pool: list[dict],
    test: list[dict],
    easy_levels: list[int],
    valid_size: int,
    seed: int,
    min_step_chars: int = 40,
) -> Split:
    """The paper's split: test as given, a stratified validation set, easy/hard train.

    Dropped with a counted warning (they cannot be placed or supervised): train problems whose
    level is null, train problems whose text is also a test or validation problem, and easy
    train problems with no gold answer or no reference solution.
    Test problems must all have a level and an answer.
    """
    easy_levels = set(easy_levels)
    for index, row in enumerate(test, start=1):
        if row.get("level") is None or row.get("answer") is None:
            raise DataError(f"test row {index} ({row.get('unique_id')}): test problems need a level and an answer")
    test_problems = {row["problem"].strip() for row in test}
    dropped = Counter()
    usable = []
    for row in train_pool:
        if row.get("level") is None:
            dropped["level is null"] += 1
        elif row["problem"].strip() in test_problems:
            dropped["also in test"] += 1
        else:
            usable.append(row)
    valid_candidates = [row for row in usable if row.get("answer") is not None]
    valid = stratified_sample(valid_candidates, test, valid_size, seed) if valid_size else []
    valid_ids = {row["unique_id"] for row in valid}
    # By text too: a pool may repeat a problem (small synthetic levels do), and a copy left in
    # train would hand the model a validation answer.
    valid_problems = {row["problem"].strip() for row in valid}
    train_easy, train_hard, train_hard_oracle = [], [], []
    oracle_dropped = 0

    def supervised(row):
        # A row may carry its own steps (the synthetic chain style: steps shorter than the merge threshold).
        steps = row.get("steps") or formats.split_reference_solution(row["solution"], min_step_chars)
        return {**question(row), "steps": steps, "answer": row["answer"]}

    for row in usable:
        if row["unique_id"] in valid_ids:
            continue
        solved = row.get("answer") is not None and (row.get("solution") or "").strip()
        if row["problem"].strip() in valid_problems:
            dropped["also in valid"] += 1
        elif row["level"] not in easy_levels:
            train_hard.append(question(row))
            if solved:
                train_hard_oracle.append(supervised(row))
            else:
                oracle_dropped += 1
        elif not solved:
            dropped["easy without answer or solution"] += 1
        else:
            train_easy.append(supervised(row))
    for reason, count in dropped.items():
        log.warning("dropped %d train problems: %s", count, reason)
    summary = {
        "easy_levels": sorted(easy_levels),
        "counts": {
            "train_easy": len(train_easy),
            "train_hard": len(train_hard),
            "valid": len(valid),
            "test": len(test),
            "test_easy": sum(row["level"] in easy_levels for row in test),
            "test_hard": sum(row["level"] not in easy_levels for row in test),
            "train_hard_oracle": len(train_hard_oracle),
            "train_hard_without_answer_or_solution": oracle_dropped,
        },
        "dropped": dict(dropped),
        "seed": seed,
    }
    return Split(
        train_easy=train_easy,
        train_hard=train_hard,
        valid=[question(row) for row in valid],
        test=[question(row) for row in test],
        valid_gold=[gold(row) for row in valid],
        test_gold=[gold(row) for row in test],
        train_hard_oracle=train_hard_oracle,
        summary=summary,
    )
