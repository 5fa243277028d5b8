"""Grader throughput: answers graded per second, as the evaluation stage grades them.

Two workloads:

* ``offline``: the sampled test solutions of an offline run (``results/samples/<generator>/
  test.jsonl`` against ``results/gold/test.jsonl``; run ``make run`` first);
* ``math500``: a MATH500-like mix built from the real MATH500 gold answers
  (``../shared/data/math/test.jsonl``): 32 samples per problem, as a model writes them. Each
  problem gets a few distinct answers, repeated: the gold answer in another but equivalent form
  (boxed, ``\\dfrac``, a decimal, ``x =``, units, spacing), near misses (a digit or sign off,
  another problem's answer, an unreduced fraction), and no answer at all. Seeded.

For each workload and grading mode, from cold caches (normal forms and verdicts cleared):

* ``is_equivalent loop``: one call per sample, in order (a researcher's first attempt);
* ``grade_many``: one batch of all (answer, gold) pairs (distinct pairs decided once, symbolic
  checks in parallel on ``--workers`` processes);
* ``judge_samples``: what the evaluation stage does: extract, cluster per question, grade.

The worker processes are started (and warmed up) before timing.

    python bench/grade_throughput.py [--results results] [--workers 2] [--limit 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from easy2hard import grading, grading_workers, prm800k  # noqa: E402
from easy2hard.grading import GradingStats, extract_answer, grade_many, is_equivalent  # noqa: E402
from easy2hard.judge import judge_samples  # noqa: E402

MATH_TEST = REPO.parent / "shared" / "data" / "math" / "test.jsonl"
SAMPLES_PER_PROBLEM = 32


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def offline_workload(results: Path, generator: str) -> tuple[list[dict], dict[str, str]] | None:
    samples_path, gold_path = results / "samples" / generator / "test.jsonl", results / "gold" / "test.jsonl"
    if not samples_path.exists() or not gold_path.exists():
        return None
    gold = {row["unique_id"]: row["answer"] for row in read_jsonl(gold_path)}
    return read_jsonl(samples_path), gold


def equivalent_forms(answer: str, rng: random.Random) -> list[str]:
    """Ways a model writes the gold answer that the lenient grader accepts."""
    forms = [answer, f"\\boxed{{{answer}}}", answer.replace("\\frac", "\\dfrac"), f" {answer} ", f"${answer}$"]
    value = grading._rational(grading.normalize_answer(answer) or "")
    if value is not None and value.denominator != 1:
        forms.append(f"{float(value):.6g}" if len(f"{float(value):.6g}") < 8 else answer)
        forms.append(f"\\frac{{{value.numerator * 2}}}{{{value.denominator * 2}}}")  # unreduced
    if value is not None and value.denominator == 1:
        forms += [f"x = {answer}", f"{answer}.0", f"{answer} \\text{{ units}}"]
    return forms


def wrong_answers(answer: str, others: list[str], rng: random.Random) -> list[str]:
    """Near misses: a digit changed, the sign flipped, another problem's answer."""
    wrong = [rng.choice(others) for _ in range(3)]
    digits = [i for i, char in enumerate(answer) if char.isdigit()]
    if digits:
        i = rng.choice(digits)
        wrong.append(answer[:i] + str((int(answer[i]) + rng.randint(1, 8)) % 10) + answer[i + 1 :])
    wrong.append(answer[1:] if answer.startswith("-") else f"-{answer}")
    return wrong


def math500_workload(seed: int = 0) -> tuple[list[dict], dict[str, str]] | None:
    if not MATH_TEST.exists():
        return None
    rng = random.Random(seed)
    rows = read_jsonl(MATH_TEST)
    answers = [row["answer"] for row in rows]
    samples, gold = [], {}
    for row in rows:
        uid, answer = row["unique_id"], row["answer"]
        gold[uid] = answer
        # A model's answers to one problem: a handful of distinct ones, some far more frequent.
        pool = rng.sample(equivalent_forms(answer, rng), k=min(2, len(equivalent_forms(answer, rng))))
        pool += rng.sample(wrong_answers(answer, answers, rng), k=3) + [None]
        weights = [rng.random() ** 2 for _ in pool]
        for index, chosen in enumerate(rng.choices(pool, weights=weights, k=SAMPLES_PER_PROBLEM)):
            completion = "We compute.\n\n" + ("no answer" if chosen is None else f"# Answer\n\n{chosen}")
            samples.append({"unique_id": uid, "sample_index": index, "level": row["level"], "completion": completion})
    return samples, gold


def clear_caches() -> None:
    grading.normalize_answer.cache_clear()
    prm800k.normal_forms.cache_clear()
    grading._verdict_cache.clear()


def timed(label: str, count: int, run) -> float:
    clear_caches()
    stats = GradingStats()
    start = time.perf_counter()
    run(stats)
    seconds = time.perf_counter() - start
    rate = count / seconds
    print(f"  {label:<22} {count:>7} answers in {seconds:7.2f} s = {rate:9,.0f} answers/s   {stats.as_record()}")
    return rate


def bench(name: str, samples: list[dict], gold: dict[str, str], workers: int, timeout: float) -> dict:
    answers = [extract_answer(sample["completion"]) for sample in samples]
    pairs = [(answer, gold[sample["unique_id"]]) for sample, answer in zip(samples, answers)]
    distinct = len({(grading.normalize_answer(a), grading.normalize_answer(g)) for a, g in pairs})
    questions = len({sample["unique_id"] for sample in samples})
    print(
        f"{name}: {len(samples)} samples of {questions} questions, {distinct} distinct normalised (answer, gold) pairs"
    )
    rates = {}
    for mode in grading.MODES:
        print(f" mode {mode}:")

        def loop(stats, mode=mode):
            for answer, expected in pairs:
                grade_many([(answer, expected)], timeout=timeout, workers=workers, mode=mode, stats=stats)

        rates[(mode, "loop")] = timed("is_equivalent loop", len(pairs), loop)
        rates[(mode, "grade_many")] = timed(
            "grade_many",
            len(pairs),
            lambda stats, mode=mode: grade_many(pairs, timeout, workers, mode=mode, stats=stats),
        )
        rates[(mode, "judge")] = timed(
            "judge_samples",
            len(samples),
            lambda stats, mode=mode: judge_samples(samples, gold, timeout, workers, mode=mode, stats=stats),
        )
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--generator", default="sft")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--limit", type=int, default=0, help="first N samples of each workload (0: all)")
    args = parser.parse_args(argv)
    # Start and warm the workers: their start-up (imports) is not grading time.
    pool = grading_workers.shared_pool(args.workers)
    warm = [pool.acquire() for _ in range(pool.size)]
    for worker in warm:
        worker.check("1", "1", 60.0)
        pool.release(worker)
    assert is_equivalent(r"\sqrt{8}", r"2\sqrt{2}")
    workloads = {"offline": offline_workload(args.results, args.generator), "math500": math500_workload()}
    for name, workload in workloads.items():
        if workload is None:
            print(f"{name}: skipped (inputs not found)")
            continue
        samples, gold = workload
        if args.limit:
            samples = samples[: args.limit]
        bench(name, samples, gold, args.workers, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
