"""Stage 7 (evaluation only): grade valid/test samples against the gold answers of every level,
with per-question answer clusters for majority voting."""

from easy2hard import cli
from easy2hard.grading import GradingStats
from easy2hard.io import DataError, read_jsonl, write_jsonl
from easy2hard.judge import judge_samples

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--samples", required=True)
    p.add_argument("--gold", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    gold = {row["unique_id"]: row["answer"] for row in read_jsonl(args.gold, required=("unique_id", "answer"))}
    samples = read_jsonl(args.samples, required=("unique_id", "completion", "level", "sample_index"))
    missing = sorted({s["unique_id"] for s in samples} - set(gold))
    if missing:
        raise DataError(f"{args.gold}: no gold answer for {len(missing)} sampled question(s), e.g. {missing[0]}")
    # Both graders' verdicts: `correct` / `answer_cluster` under grading.mode, `verdicts` under each.
    stats = GradingStats()
    judged = judge_samples(
        samples,
        gold,
        args.params["timeout"],
        args.params["workers"],
        mode=args.params["mode"],
        every_mode=True,
        stats=stats,
    )
    write_jsonl(args.out, judged)
    for mode in judged[0]["verdicts"] if judged else ():
        print(f"{sum(r['verdicts'][mode]['correct'] for r in judged)} of {len(judged)} samples correct ({mode})")
    print(f"grading: {stats.as_record()}")
    cli.finish(args, grading=stats.as_record())
