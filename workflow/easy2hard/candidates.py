"""Per-question candidate solutions, as the RL data stages (ReST-EM filter, DPO pairs) see them:
a policy's samples grouped by question, identical solutions counted once, each parsed."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterator

from easy2hard import formats


def by_question(samples: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    """(unique_id, its rows in sample order), questions in id order (deterministic output)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in samples:
        groups[row["unique_id"]].append(row)
    for unique_id in sorted(groups):
        yield unique_id, sorted(groups[unique_id], key=lambda r: r["sample_index"])


def distinct(rows: list[dict], counts: Counter | None = None) -> Iterator[tuple[dict, list[str], str | None]]:
    """(row, steps, answer) for each distinct non-empty solution, first occurrence kept; empty
    solutions (no step, no answer) are counted in `counts` as "empty_solutions"."""
    seen = set()
    for row in rows:
        text = row["completion"].strip()
        steps, answer = formats.parse_solution(row["completion"])
        if not (steps or answer) and counts is not None:
            counts["empty_solutions"] += 1
        if (steps or answer) and text not in seen:
            seen.add(text)
            yield row, steps, answer
