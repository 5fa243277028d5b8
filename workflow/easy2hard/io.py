"""JSONL and file helpers: errors name the file and line, outputs appear only when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Bad input data; the message names the file and the line or field."""


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read a JSON Lines file; every row must be an object holding the `required` keys."""
    path = Path(path)
    required = tuple(required)
    rows = []
    try:
        with open(path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise DataError(f"{path}:{line_number}: not valid UTF-8 ({error.reason})") from None
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
                missing = [key for key in required if key not in row]
                if missing:
                    raise DataError(f"{path}:{line_number}: missing field(s) {', '.join(missing)}")
                rows.append(row)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return rows


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is renamed to `path`, on error removed.

    Readers (and Snakemake) therefore never see a half-written file or model folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if directory:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(target, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically as JSON Lines; returns the number of rows."""
    count = 0
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
