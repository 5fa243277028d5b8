"""ReST-EM, E-step: keep the previous policy's train solutions that pass the filter (easy: gold
answer and/or evaluator score; hard: evaluator score only), as SFT rows for the M-step."""

from easy2hard import cli, rest_em
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
    config = rest_em.RestEmConfig.from_dict(params)
    problems = {q["unique_id"]: q["problem"] for path in args.questions for q in read_jsonl(path, required=("unique_id", "problem"))}
    samples = read_jsonl(args.graded, required=("unique_id", "level", "sample_index", "completion"))
    kept, stats = rest_em.select(samples, read_step_scores(args.scores), easy_levels, config)
    write_jsonl(args.out, ({**row, "problem": problems[row["unique_id"]]} for row in kept))
    write_json(args.stats, stats)
    print(f"kept {len(kept)} solutions: {stats}")
