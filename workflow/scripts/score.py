"""Score every sampled solution with an evaluator: per-unit probabilities (steps, then answer)."""

from easy2hard import cli, evaluator, modeling
from easy2hard.io import read_jsonl, write_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--evaluator", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--questions", required=True, nargs="+")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    device, dtype = modeling.device_and_dtype()
    model, tokenizer = evaluator.load_backbone(args.evaluator, dtype=dtype)
    model.to(device).eval()
    problems = {
        row["unique_id"]: row["problem"]
        for path in args.questions
        for row in read_jsonl(path, required=("unique_id", "problem"))
    }
    samples = read_jsonl(args.samples, required=("unique_id", "sample_index", "completion"))
    solutions = [
        {"problem": problems[s["unique_id"]], "completion": s["completion"], "finished": s.get("finished", True)}
        for s in samples
    ]
    scores = evaluator.score_solutions(
        model, tokenizer, solutions, args.params["batch_size"], args.params["max_tokens"], progress=True
    )
    rows = (
        {"unique_id": s["unique_id"], "sample_index": s["sample_index"], "step_scores": sc}
        for s, sc in zip(samples, scores)
    )
    print(f"scored {write_jsonl(args.out, rows)} solutions")
    cli.finish(args)
