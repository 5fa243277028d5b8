"""What every stage script shares: argument parsing of the rule's config slice, logging, threads."""

from __future__ import annotations

import argparse
import json
import logging


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=json.loads, default={}, help="the rule's config slice as JSON")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return parser


def setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
