"""PRM800K records (Lightman et al., 2023) as training data: which records may be used, the
solution path a labeller followed, and the SFT examples the authors build from it.

The recipe follows the authors' data preparation (Edward-Sun/easy-to-hard,
``data/prepare_prm800k_sft.py`` and ``prepare_prm800k_rm.py``), re-implemented here:

* records of MATH problems are kept only when the problem is an easy-level train problem;
  problems that are not in MATH at all are kept; test (and our validation) problems never are;
* the path through a record: at each step the chosen completion, else the human-written one,
  else the only completion; a step with several unchosen completions ends the path;
* ``# Answer`` always follows a blank line (some completions write ``...\\n# Answer``);
* identical (problem, prefix, completion) texts are used once, across records and files
  (phase-1 and phase-2 overlap).

SFT (``sft.source: prm800k``): every completion rated +1 becomes one example -- the problem and
the path so far as context, the completion as the target, EOS only after a completion that holds
the answer. Examples longer than the SFT ``max_length`` are dropped by the trainer, as the
authors drop those over 768 tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from easy2hard import formats
from easy2hard.io import DataError, read_jsonl


def read_records(path: str) -> list[dict]:
    """PRM800K JSONL (local path); errors name the file and line."""
    return read_jsonl(path, required=("question", "label"))


def math_levels(paths: list[str]) -> dict[str, int | None]:
    """Problem text (stripped) -> MATH level, from MATH JSONL files (train and test)."""
    return {
        row["problem"].strip(): row["level"]
        for path in paths
        for row in read_jsonl(path, required=("problem", "level"))
    }


def usable_records(
    records: list[dict],
    levels_by_problem: dict[str, int | None],
    easy_levels,
    excluded_problems: set[str],
    source: str,
    counts: Counter,
) -> Iterator[tuple[int, str, list[dict]]]:
    """(record number, problem, steps) of every record whose problem may supervise: not excluded
    (test, validation, hard train questions), not a MATH problem of a hard (or unknown) level. Counts
    what it drops."""
    easy_levels = set(easy_levels)
    for number, record in enumerate(records, start=1):
        try:
            problem, steps = record["question"]["problem"], record["label"]["steps"]
        except (KeyError, TypeError):
            raise DataError(f"{source}: record {number}: expected question.problem and label.steps") from None
        key = problem.strip()
        if not steps:
            counts["records without steps"] += 1
        elif key in excluded_problems:
            counts["records of excluded problems (test, validation, hard train)"] += 1
        elif key in levels_by_problem and levels_by_problem[key] not in easy_levels:
            counts["records of hard (or unlevelled) MATH problems"] += 1
        else:
            counts["records kept"] += 1
            yield number, problem, steps


def normalize_completion(text: str) -> str:
    """A completion with ``# Answer`` after a blank line and no blank line inside its step."""
    body, header, tail = text.partition(formats.ANSWER_HEADER)
    if not header:
        return formats.normalize_step(text)
    body = formats.normalize_step(body)
    return (
        (body + formats.STEP_SEPARATOR if body else "") + formats.ANSWER_HEADER + formats.STEP_SEPARATOR + tail.strip()
    )


def path_step(step: dict) -> str | None:
    """The completion the labeller's path continues with at `step`, or None where it ends."""
    completions = step.get("completions") or []
    if step.get("chosen_completion") is not None:
        return completions[step["chosen_completion"]]["text"]
    if step.get("human_completion"):
        return step["human_completion"]["text"]
    if len(completions) == 1:
        return completions[0]["text"]
    return None


def walk(steps: list[dict]) -> Iterator[tuple[int, list[str], dict]]:
    """(step number, path so far as normalised steps, step) along the labeller's path."""
    prefix: list[str] = []
    for number, step in enumerate(steps, start=1):
        if step.get("completions") is None:
            return
        yield number, prefix, step
        chosen = path_step(step)
        if chosen is None:
            return
        prefix = prefix + [normalize_completion(chosen)]


def sft_rows(
    records: list[dict], levels_by_problem: dict[str, int | None], easy_levels, excluded_problems: set[str], source: str
) -> tuple[list[dict], Counter]:
    """SFT rows {unique_id, problem, context, target, final} from the +1-rated completions."""
    counts, seen, rows = Counter(), set(), []
    for number, problem, steps in usable_records(
        records, levels_by_problem, easy_levels, excluded_problems, source, counts
    ):
        for step_number, prefix, step in walk(steps):
            for completion in step["completions"]:
                if completion.get("rating") != 1:
                    counts["completions not rated +1"] += 1
                    continue
                text = normalize_completion(completion.get("text") or "")
                if not text:
                    counts["empty completions"] += 1
                    continue
                context = formats.STEP_SEPARATOR.join(prefix)
                key = (problem.strip(), context, text)
                if key in seen:
                    counts["duplicates dropped"] += 1
                    continue
                seen.add(key)
                # The separator before the completion belongs to the target: the model learns to write it.
                separator = formats.STEP_SEPARATOR if context else ""
                # EOS after the answer, as the authors decide it: "# Answer" and a blank line in the raw text.
                final = formats.ANSWER_HEADER + formats.STEP_SEPARATOR in completion["text"]
                rows.append(
                    {
                        "unique_id": f"prm800k/{number}/{step_number}",
                        "problem": problem,
                        "context": context,
                        "target": separator + text,
                        "final": final,
                    }
                )
    counts["examples"] = len(rows)
    return rows, counts
