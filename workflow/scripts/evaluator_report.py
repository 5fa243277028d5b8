"""Evaluator quality report (validation, evaluation only): AUC and best-of-N by level."""

from easy2hard import cli, evaluator_report

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--eval", required=True, help="gold-graded validation samples")
    p.add_argument("--scores", nargs="+", required=True, metavar="EVALUATOR=PATH")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    args = p.parse_args()
    cli.setup(args)
    score_paths = cli.key_paths(args.scores, "--scores", "EVALUATOR=PATH")
    samples, grids = evaluator_report.load_inputs(args.eval, score_paths)
    frame = evaluator_report.evaluator_quality(samples, grids, args.params["easy_levels"])
    evaluator_report.write(frame, args.out_csv, args.out_md, args.params["aggregation"])
    print(frame.to_string())
    cli.finish(args)
