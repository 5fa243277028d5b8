"""What every stage script shares: argument parsing of the rule's config slice, logging, threads."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=json.loads, default={}, help="the rule's config slice as JSON")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return parser


def key_paths(
    values: list[str], option: str, form: str = "KEY=PATH", keys: tuple[str, ...] | None = None
) -> dict[str, str]:
    """`option`'s KEY=PATH arguments as an ordered {key: path}; a value without a key, `=` or a
    path, or a key given twice, stops the script with a message naming the option and the value;
    with `keys`, so does a key missing or unknown."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or not key or not path:
            raise SystemExit(f"{option}: expected {form}, got {value!r}")
        if key in pairs:
            raise SystemExit(f"{option}: {key!r} given twice ({value!r})")
        pairs[key] = path
    if keys is not None and set(pairs) != set(keys):
        raise SystemExit(
            f"{option}: expected exactly the keys {', '.join(keys)}; missing: "
            f"{', '.join(k for k in keys if k not in pairs) or '-'}; "
            f"unknown: {', '.join(k for k in pairs if k not in keys) or '-'}"
        )
    return pairs


def setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


# Arguments naming what a stage writes; every other argument naming an existing path is an input.
OUTPUT_ARGS = ("out", "stats", "value_out", "out_csv", "out_md", "out_png")


def _existing_paths(value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and v and Path(v).exists()]


def finish(args: argparse.Namespace, **facts) -> None:
    """Record provenance (config slice, code version, library versions, input fingerprints, and
    what the stage reports about itself in ``facts``, e.g. ``sampling=``: which back end sampled)
    beside every output the stage wrote: `x.jsonl.provenance.json`, or `provenance.json` inside a
    folder. Rank 0 only: the other processes of a multi-GPU job write nothing."""
    from easy2hard import provenance

    if int(os.environ.get("RANK", 0)) != 0:
        return
    named = [getattr(args, name) for name in OUTPUT_ARGS if getattr(args, name, None)]
    outputs = [path for value in named for path in (value.values() if isinstance(value, dict) else [value])]
    inputs = {
        name: paths
        for name, value in vars(args).items()
        if name not in OUTPUT_ARGS and name != "params" and (paths := _existing_paths(value))
    }
    record = {**provenance.record(args.params, inputs), **facts}
    for output in outputs:
        provenance.write(output, record)
