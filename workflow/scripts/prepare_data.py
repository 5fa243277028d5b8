"""Stage 1: load the problems and split them (easy train with solutions; hard train, valid and
test as questions only; valid/test gold answers into a folder only evaluation reads; hard train
solutions into a folder only the oracle stages read)."""

from easy2hard import cli, data
from easy2hard.io import write_json, write_jsonl

# The files this stage writes: --out KEY=PATH names each (the rule's outputs).
OUTPUTS = ("train_easy", "train_hard", "valid", "test", "summary", "valid_gold", "test_gold", "oracle_train_hard")

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument(
        "--out", nargs="+", required=True, metavar="KEY=PATH", help=f"one path per key: {', '.join(OUTPUTS)}"
    )
    args = p.parse_args()
    args.out = cli.key_paths(args.out, "--out", keys=OUTPUTS)
    cli.setup(args)
    params = args.params
    train_pool, test = data.apply_subset(*data.load_source(params), params["subset"])
    split = data.split_problems(
        train_pool, test, params["easy_levels"], params["valid_size"], params["seed"], params["min_step_chars"]
    )
    for name in ("train_easy", "train_hard", "valid", "test", "valid_gold", "test_gold"):
        write_jsonl(args.out[name], getattr(split, name))
    write_jsonl(args.out["oracle_train_hard"], split.train_hard_oracle)
    write_json(args.out["summary"], split.summary)
    print(split.summary)
    cli.finish(args)
