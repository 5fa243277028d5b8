"""Iterative DPO, data: preference pairs from the previous policy's train samples, ranked by the
easy-trained evaluator (best vs worst per question)."""

from easy2hard import cli, dpo
from easy2hard.io import read_jsonl, write_json, write_jsonl
from easy2hard.report import read_step_scores

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--graded", required=True, help="graded train samples of the previous policy")
    p.add_argument("--scores", required=True, help="evaluator scores of the same samples")
    p.add_argument("--questions", required=True, nargs="+", help="train questions (easy and hard)")
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    cli.setup(args)
    params = dict(args.params)
    easy_levels = params.pop("easy_levels")
    config = dpo.DPOConfig.from_dict(params)
    problems = {q["unique_id"]: q["problem"] for path in args.questions for q in read_jsonl(path, required=("unique_id", "problem"))}
    samples = read_jsonl(args.graded, required=("unique_id", "level", "sample_index", "completion"))
    pairs, stats = dpo.make_pairs(samples, read_step_scores(args.scores), easy_levels, config)
    write_jsonl(args.out, ({**pair, "problem": problems[pair["unique_id"]]} for pair in pairs))
    write_json(args.stats, stats)
    print(f"{len(pairs)} pairs: {stats}")
