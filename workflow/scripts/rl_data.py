"""RL data from the previous policy's train samples and their evaluator scores: the ReST-EM filter
(`--algorithm rest_em`: kept solutions as SFT rows) or DPO preference pairs (`--algorithm dpo`)."""

from easy2hard import cli, dpo, rest_em
from easy2hard.config import from_dict
from easy2hard.io import DataError, read_jsonl, write_json, write_jsonl
from easy2hard.scores import read_step_scores

SELECT = {  # algorithm -> (config dataclass, selection function)
    "rest_em": (rest_em.RestEmConfig, rest_em.select),
    "dpo": (dpo.DPOConfig, dpo.make_pairs),
}

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--algorithm", required=True, choices=sorted(SELECT))
    p.add_argument("--graded", required=True, help="graded train samples of the previous policy")
    p.add_argument("--scores", required=True, help="evaluator scores of the same samples")
    p.add_argument("--questions", required=True, nargs="+", help="train questions (easy and hard)")
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    cli.setup(args)
    config_class, select = SELECT[args.algorithm]
    config = from_dict(config_class, args.params["selection"], f"rl.{args.algorithm}")
    problems = {
        q["unique_id"]: q["problem"]
        for path in args.questions
        for q in read_jsonl(path, required=("unique_id", "problem"))
    }
    samples = read_jsonl(args.graded, required=("unique_id", "level", "sample_index", "completion"))
    scores = read_step_scores(args.scores)
    missing = [
        (s["unique_id"], s["sample_index"]) for s in samples if (s["unique_id"], s["sample_index"]) not in scores
    ]
    if missing:
        raise DataError(
            f"{args.scores}: no scores for {len(missing)} of the {len(samples)} samples in {args.graded}"
            f" (first: question {missing[0][0]!r} sample {missing[0][1]})"
        )
    rows, stats = select(samples, scores, args.params["easy_levels"], config)
    write_jsonl(args.out, ({**row, "problem": problems[row["unique_id"]]} for row in rows))
    write_json(args.stats, stats)
    print(f"{args.algorithm}: {len(rows)} rows; {stats}")
    cli.finish(args)
