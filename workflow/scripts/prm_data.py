"""PRM data: step labels from PRM800K (human), from the synthetic data's step labeller (the
offline stand-in for human labels), or from Monte-Carlo rollouts of the policy on EASY train
questions (automatic, Math-Shepherd style). None reads a hard-level gold answer."""

import random
from collections import Counter, defaultdict

from easy2hard import cli, evaluator_data, prm800k_data, sampling
from easy2hard.grading import GradingStats, extract_answer, grade_many
from easy2hard.io import read_jsonl, write_json, write_jsonl


def human_labels(args, params):
    levels = prm800k_data.math_levels(args.math_files)
    # Test and validation problems never become training data, nor hard train ones (but for an oracle).
    excluded = {
        r["problem"].strip() for path in args.excluded_questions for r in read_jsonl(path, required=("problem",))
    }
    records = [r for path in args.prm800k for r in prm800k_data.read_records(path)]
    examples, counts = evaluator_data.prm800k_examples(
        records, levels, params["easy_levels"], excluded, ", ".join(args.prm800k)
    )
    return examples, dict(counts), {}


def labeller_labels(args, params):
    """Every distinct sampled solution of a supervised (easy) train question, its steps checked
    by the synthetic labeller, which refuses any problem outside the supervised levels."""
    supervised = {
        row["unique_id"]: row
        for path in args.answers
        for row in read_jsonl(path, required=("unique_id", "problem", "level"))
    }
    graded = read_jsonl(args.graded, required=("unique_id", "completion"))
    examples, counts = evaluator_data.labeller_examples(graded, supervised, params["easy_levels"])
    return examples, dict(counts), {}


def automatic_labels(args, params):
    auto = params["auto"]
    easy = {
        row["unique_id"]: row
        for path in args.answers
        for row in read_jsonl(path, required=("unique_id", "problem", "answer"))
    }
    graded = [
        row
        for row in read_jsonl(args.graded, required=("unique_id", "completion", "correct"))
        if row["correct"] is not None
    ]
    by_question = defaultdict(dict)
    for row in graded:  # distinct solutions per question
        by_question[row["unique_id"]].setdefault(row["completion"].strip(), row)
    rng = random.Random(auto["seed"])
    questions = sorted(by_question)
    questions = rng.sample(questions, min(auto["num_questions"], len(questions)))
    solutions = [s for q in sorted(questions) for s in by_question[q].values()]

    # A correct solution is its own successful rollout from each of its prefixes, so under the
    # hard estimate its steps are positive without rolling out; every other prefix is rolled out.
    needs_rollouts = [s for s in solutions if auto["estimate"] == "soft" or not s["correct"]]
    config = sampling.SamplingConfig(**{**params["sampling"], "num_samples": auto["rollouts"], "seed": auto["seed"]})
    model, tokenizer = sampling.load_policy(args.policy, config)
    prompts, owners = [], []
    for index, solution in enumerate(needs_rollouts):
        for prefix in evaluator_data.rollout_prefixes(solution):
            prompts.append(sampling.encode_prompt(tokenizer, easy[solution["unique_id"]]["problem"], prefix))
            owners.append((index, prefix))
    usage = sampling.BackendUsage()
    continuations = list(
        sampling.generate(model, tokenizer, prompts, config, desc="rollouts", usage=usage, model_path=args.policy)
    )
    pairs = []
    for (index, prefix), group in zip(owners, continuations):
        gold = easy[needs_rollouts[index]["unique_id"]]["answer"]
        pairs += [(extract_answer(prefix + c["text"]), gold) for c in group]
    grading_stats = GradingStats()
    verdicts = iter(
        grade_many(
            pairs,
            timeout=params["grading"]["timeout"],
            workers=params["grading"]["workers"],
            mode=params["grading"]["mode"],
            stats=grading_stats,
        )
    )
    outcomes = defaultdict(list)
    for (index, _), group in zip(owners, continuations):
        outcomes[index].append([next(verdicts) for _ in group])
    rolled_out = {id(solution): index for index, solution in enumerate(needs_rollouts)}
    examples, counts = [], Counter()
    for solution in solutions:
        problem = easy[solution["unique_id"]]["problem"]
        steps = evaluator_data.rollout_prefixes(solution)
        groups = outcomes[rolled_out[id(solution)]] if id(solution) in rolled_out else [[True]] * len(steps)
        if not steps:
            counts["solutions without steps"] += 1
            continue
        examples.append(evaluator_data.auto_prm_example(solution, problem, groups, auto["estimate"]))
    counts.update(
        questions=len(questions), solutions=len(solutions), rolled_out=len(needs_rollouts), rollouts=len(pairs)
    )
    return examples, dict(counts), {"sampling": usage.as_record(), "grading": grading_stats.as_record()}


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--graded")
    p.add_argument(
        "--answers",
        nargs="*",
        default=[],
        help="rollouts: train problems whose gold answers label (easy; the oracle adds hard)",
    )
    p.add_argument("--policy")
    p.add_argument("--prm800k", nargs="*", default=[], help="prm800k: PRM800K JSONL files")
    p.add_argument("--math-files", nargs="*", default=[])
    p.add_argument("--excluded-questions", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    cli.setup(args)
    params = args.params
    sources = {"prm800k": human_labels, "labeller": labeller_labels, "auto": automatic_labels}
    examples, counts, facts = sources[params["source"]](args, params)
    write_jsonl(args.out, examples)
    empty = {} if examples else {"empty_because": f"the {params['source']} label source gave no example ({counts})"}
    write_json(
        args.stats, {"source": params["source"], "counts": counts, **evaluator_data.summarize(examples), **empty}
    )
    print(counts, facts)
    cli.finish(args, **facts)
