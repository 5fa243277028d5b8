"""OPRM data: a configurable mixture of the PRM and ORM examples."""

from easy2hard import cli, evaluator_data
from easy2hard.io import read_jsonl, write_json, write_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--prm", required=True)
    p.add_argument("--orm", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    args = p.parse_args()
    cli.setup(args)
    params = args.params
    examples = evaluator_data.mix(
        read_jsonl(args.prm), read_jsonl(args.orm), params["prm_fraction"], params["orm_fraction"], params["seed"]
    )
    write_jsonl(args.out, examples)
    empty = (
        {}
        if examples
        else {"empty_because": f"the mixture of {args.prm} and {args.orm} is empty (their stats.json files say why)"}
    )
    write_json(args.stats, {**evaluator_data.summarize(examples), **empty})
    cli.finish(args)
