"""What produced an output: the rule's config slice (seeds included), the code version (git
describe), the grader version, library versions, the command line and the inputs' fingerprints.

Every stage script records it beside each output it writes (`cli.finish`): a file `x.jsonl` gets
`x.jsonl.provenance.json`, a model folder gets `provenance.json` inside it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from easy2hard import launch
from easy2hard.io import atomic_output

LIBRARIES = (
    "easy2hard",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "snakemake",
    "math-verify",
    "sympy",
    "deepspeed",
    "numpy",
    "pandas",
)
REPO = Path(__file__).resolve().parents[2]
FILE_SUFFIX = ".provenance.json"
FOLDER_FILE = "provenance.json"


@functools.cache
def git_describe(repo: str | os.PathLike = REPO) -> str | None:
    """`git describe --always --dirty --tags` of the checkout, or None outside one."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


HASH_LIMIT = 256 << 20  # larger files (7b weights) are recorded by size and mtime: hashing them costs minutes


def fingerprint(path: str | os.PathLike) -> dict:
    """Size and SHA-256 of a file (size and mtime above HASH_LIMIT); a folder: the same for each
    of its files."""
    path = Path(path)
    if path.is_dir():
        return {
            "files": {
                str(p.relative_to(path)): fingerprint(p)
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.endswith(FILE_SUFFIX) and p.name != FOLDER_FILE
            }
        }
    if not path.exists():
        return {"missing": True}
    stat = path.stat()
    if stat.st_size > HASH_LIMIT:
        return {"bytes": stat.st_size, "mtime": stat.st_mtime}
    return {"bytes": stat.st_size, "sha256": sha256_file(path)}


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes (FileNotFoundError when there is none)."""
    path = Path(path)
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Keyed on size and mtime too: a stage that fingerprints its model twice (the sampler's shard
    check, then its provenance) reads it once, and a rewritten file is read again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record(params: dict, inputs: dict[str, list[str]] | None = None) -> dict:
    from easy2hard.grading import GRADER_VERSION

    return {
        "config": params,
        "code_version": git_describe(),
        "grader_version": GRADER_VERSION,
        "libraries": {name: version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "cpu_bf16": os.environ.get(launch.CPU_BF16_ENV, "") == "1",  # compute.cpu_bf16: CPU numbers in bf16
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "inputs": {name: {path: fingerprint(path) for path in paths} for name, paths in (inputs or {}).items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def location(output: str | os.PathLike) -> Path:
    """Where the provenance of an output lives: inside a folder, beside a file."""
    output = Path(output)
    return output / FOLDER_FILE if output.is_dir() else output.with_name(output.name + FILE_SUFFIX)


def read(output: str | os.PathLike) -> dict | None:
    """The provenance recorded for an output (None when it has none, e.g. a hand-made file)."""
    target = location(output)
    if not target.exists():
        return None
    return json.loads(target.read_text(encoding="utf-8"))


def unexpected_sampling_fallbacks(root: str | os.PathLike) -> dict[str, list[str]]:
    """Provenance files under `root` whose outputs were (partly) sampled by `generate` although the
    sampling engine is meant to run the model, with the reasons: the end-of-run warning."""
    found = {}
    for path in sorted(Path(root).rglob(f"*{FOLDER_FILE}")):
        try:
            sampling = json.loads(path.read_text(encoding="utf-8")).get("sampling") or {}
        except (OSError, ValueError):
            continue  # a provenance file being written or damaged is not this check's business
        reasons = [f["reason"] for f in sampling.get("fallbacks", []) if not f["expected"]]
        if reasons:
            found[str(path)] = reasons
    return found


def write(output: str | os.PathLike, provenance: dict) -> Path:
    target = location(output)
    with atomic_output(target) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")
    return target
