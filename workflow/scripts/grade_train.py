"""Stage 6 (train): grade train samples against the gold answers of EASY train problems only.
Hard train questions have no gold answer in any file this stage can read; they stay null. (The
oracle variant, grade_train_full, also gets the hard train answers.)"""

from easy2hard import cli
from easy2hard.grading import GradingStats
from easy2hard.io import read_jsonl, write_jsonl
from easy2hard.judge import judge_samples

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--samples", required=True)
    p.add_argument("--answers", required=True, nargs="+", help="train problems whose gold answers grade (easy only)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    easy_gold = {
        row["unique_id"]: row["answer"]
        for path in args.answers
        for row in read_jsonl(path, required=("unique_id", "answer"))
    }
    samples = read_jsonl(args.samples, required=("unique_id", "completion"))
    stats = GradingStats()
    judged = judge_samples(
        samples,
        easy_gold,
        args.params["timeout"],
        args.params["workers"],
        cluster=False,
        mode=args.params["mode"],
        stats=stats,
    )
    write_jsonl(args.out, judged)
    graded = [row["correct"] for row in judged if row["correct"] is not None]
    print(
        f"graded {len(graded)} samples ({sum(graded)} correct); "
        f"{len(judged) - len(graded)} samples without a gold answer"
    )
    print(f"grading ({args.params['mode']}): {stats.as_record()}")
    cli.finish(args, grading=stats.as_record())
