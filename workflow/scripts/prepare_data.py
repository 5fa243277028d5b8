"""Stage 1: load the problems and split them (easy train with solutions; hard train, valid and
test as questions only; valid/test gold answers into a folder only evaluation reads; hard train
solutions into a folder only the oracle stages read)."""

from pathlib import Path

from easy2hard import cli, data
from easy2hard.io import write_json, write_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--gold-dir", required=True)
    p.add_argument("--oracle-dir", required=True)
    args = p.parse_args()
    cli.setup(args)
    cfg = args.params
    train_pool, test = data.apply_subset(*data.load_source(cfg), cfg.get("subset"))
    split = data.split_problems(train_pool, test, cfg["easy_levels"], cfg["valid_size"], cfg["seed"], cfg["min_step_chars"])
    data_dir, gold_dir = Path(args.data_dir), Path(args.gold_dir)
    for name in ("train_easy", "train_hard", "valid", "test"):
        write_jsonl(data_dir / f"{name}.jsonl", getattr(split, name))
    write_jsonl(gold_dir / "valid.jsonl", split.valid_gold)
    write_jsonl(gold_dir / "test.jsonl", split.test_gold)
    write_jsonl(Path(args.oracle_dir) / "train_hard.jsonl", split.train_hard_oracle)
    write_json(data_dir / "summary.json", split.summary)
    print(split.summary)
    cli.finish(args)
