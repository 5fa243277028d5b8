"""RL training curves: validation accuracy per round (greedy and sampled; round 0 = SFT) and the
per-step training logs of every round. Reads gold-graded validation samples: a reporting stage."""

from easy2hard import cli, rl_report

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument(
        "--greedy", nargs="+", required=True, help="ALGORITHM:ROUND=results/eval/<generator>/valid.greedy.jsonl"
    )
    p.add_argument("--sampled", nargs="+", required=True, help="ALGORITHM:ROUND=results/eval/<generator>/valid.jsonl")
    p.add_argument("--models", nargs="*", default=[], help="ALGORITHM:ROUND=results/models/<generator>")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-png", required=True)
    args = p.parse_args()
    cli.setup(args)
    evals = {}
    for decoding, items in (("greedy", args.greedy), ("sampled", args.sampled)):
        for key, path in rl_report.parse_pairs(items, f"--{decoding}").items():
            evals.setdefault(key, {})[decoding] = path
    rounds = rl_report.round_table(evals, args.params["easy_levels"])
    logs = rl_report.load_logs(rl_report.parse_pairs(args.models, "--models"))
    rl_report.write(rounds, logs, args.out_csv, args.out_png)
    print(rl_report.summary(rounds))
    cli.finish(args)
