"""Stage 5: sample N solutions per question (or one greedy solution) from a policy."""

from easy2hard import cli, modeling, provenance, sampling
from easy2hard.io import read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--questions", required=True, nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--greedy", action="store_true")
    args = p.parse_args()
    cli.setup(args)
    params = dict(args.params)
    shard_questions = params.pop("shard_questions")
    config = sampling.SamplingConfig(**params, greedy=args.greedy)
    device, dtype = modeling.device_and_dtype()
    model, tokenizer = modeling.load_model(args.model, dtype=dtype)
    model.to(device).eval()
    questions = [q for path in args.questions for q in read_jsonl(path, required=("unique_id", "problem", "level"))]
    count, usage = sampling.sample_in_shards(model, tokenizer, questions, config, args.out, shard_questions,
                                             provenance.fingerprint(args.model))
    print(f"wrote {count} samples for {len(questions)} questions; back end: {usage.as_record()['backend']}")
    cli.finish(args, sampling=usage.as_record())
