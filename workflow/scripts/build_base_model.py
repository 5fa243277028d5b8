"""Stage 3: the base model as an HF folder: a pretrained model (hub id, local folder, GGUF) or a
tiny Llama built from config with a tokenizer trained offline on the training text."""

from easy2hard import cli, formats, modeling
from easy2hard.io import atomic_output, read_jsonl

if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--train-easy", help="tiny model: tokenizer training text")
    p.add_argument("--train-hard", help="tiny model: tokenizer training text")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.setup(args)
    params = args.params
    if params["source"] == "tiny":
        # Tokenizer text: easy solutions in the training format and every train question.
        # No hard answers exist in these files, so none can leak into the vocabulary.
        easy = read_jsonl(args.train_easy)
        texts = [formats.format_prompt(r["problem"]) + formats.format_solution(r["steps"], r["answer"]) for r in easy]
        texts += [formats.format_prompt(r["problem"]) for r in read_jsonl(args.train_hard)]
        tokenizer = modeling.train_tokenizer(texts, params["tiny"]["vocab_size"])
        model = modeling.build_tiny_llama(tokenizer, params["tiny"], params["seed"])
    else:
        model, tokenizer = modeling.load_pretrained(params["name_or_path"], params.get("gguf_file"), dtype="auto")
    with atomic_output(args.out, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    print(f"saved {sum(p.numel() for p in model.parameters()):,} parameters and a {len(tokenizer)}-token vocabulary")
    cli.finish(args)
