"""ORM data: graded samples of EASY train questions, outcome labels, balanced per question."""

from easy2hard import cli, evaluator_data
from easy2hard.io import read_jsonl, write_json, write_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--graded", required=True)
    p.add_argument(
        "--questions", required=True, nargs="+", help="the train problems graded (easy; the oracle adds hard)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    cli.setup(args)
    questions = [row for path in args.questions for row in read_jsonl(path, required=("unique_id", "problem"))]
    problems = {row["unique_id"]: row["problem"] for row in questions}
    graded = read_jsonl(args.graded, required=("unique_id", "completion", "correct"))
    references = evaluator_data.reference_samples(questions) if args.params["reference_solutions"] else []
    graded += references
    kept, stats = evaluator_data.balance_orm(graded, args.params["max_ratio"], args.params["seed"])
    examples = [evaluator_data.orm_example(sample, problems[sample["unique_id"]]) for sample in kept]
    write_jsonl(args.out, examples)
    write_json(
        args.stats,
        {
            "balancing": stats.__dict__,
            "reference_solutions": len(references),
            **evaluator_data.summarize(examples),
            **({} if examples else {"empty_because": stats.empty_because()}),
        },
    )
    print(stats)
    cli.finish(args)
