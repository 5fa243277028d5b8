"""Stage 5: sample N solutions per question (or one greedy solution) from a policy; with
--exemplars, the in-context baseline: the base model prompted with k solved easy problems."""

from easy2hard import cli, formats, provenance, sampling
from easy2hard.io import read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--questions", required=True, nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--exemplars", help="in-context baseline: solved easy train problems to draw the exemplars from")
    args = p.parse_args()
    cli.setup(args)
    config = sampling.SamplingConfig(**args.params["sampling"], greedy=args.greedy)
    model, tokenizer = sampling.load_policy(args.model, config)
    questions = [q for path in args.questions for q in read_jsonl(path, required=("unique_id", "problem", "level"))]
    context, icl = "", {}
    if args.exemplars:
        rows = read_jsonl(args.exemplars, required=("unique_id", "problem", "steps", "answer"))
        k, seed = args.params["icl"]["k"], args.params["icl"]["seed"]
        exemplars = formats.choose_exemplars(rows, k, seed)
        context = formats.format_exemplars(exemplars)
        icl = {"icl": {"k": k, "seed": seed, "exemplars": [e["unique_id"] for e in exemplars]}}
        print(f"in-context baseline: {k} exemplars ({', '.join(icl['icl']['exemplars'])})")
    count, usage = sampling.sample_in_shards(
        model,
        tokenizer,
        questions,
        config,
        args.out,
        args.params["shard_questions"],
        provenance.fingerprint(args.model),
        context,
        model_path=args.model,
    )
    print(f"wrote {count} samples for {len(questions)} questions; back end: {usage.as_record()['backend']}")
    cli.finish(args, sampling=usage.as_record(), **icl)
