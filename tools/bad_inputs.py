"""Feed bad inputs to the stage scripts and print what each produced: exit code, the message, and
any output left behind (README, Reliability). Run: python tools/bad_inputs.py"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
work = Path(tempfile.mkdtemp())
good_math = {
    "problem": "1+1?",
    "solution": "1+1=2. So $\\boxed{2}$.",
    "answer": "2",
    "subject": "Algebra",
    "level": 1,
    "unique_id": "a/1.json",
}


def jsonl(name, rows):
    p = work / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(p)


def run(label, script, params, *args, out):
    r = subprocess.run(
        [sys.executable, str(REPO / "workflow/scripts" / script), "--params", json.dumps(params), *args],
        capture_output=True,
        text=True,
        env=ENV,
    )
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    msg = lines[-1] if lines else r.stdout.strip().splitlines()[-1]
    left = sorted(p.name for p in work.iterdir() if p.name.startswith(Path(out).name))
    print(f"- {label}: exit {r.returncode}; `{msg.replace(str(work) + '/', '')}`; outputs left: {left or 'none'}")


def prepare_outputs():
    files = {
        "train_easy": "data/train_easy.jsonl",
        "train_hard": "data/train_hard.jsonl",
        "valid": "data/valid.jsonl",
        "test": "data/test.jsonl",
        "summary": "data/summary.json",
        "valid_gold": "gold/valid.jsonl",
        "test_gold": "gold/test.jsonl",
        "oracle_train_hard": "oracle/train_hard.jsonl",
    }
    return ["--out", *(f"{key}={work / path}" for key, path in files.items())]


def prepare(label, train_rows, test_rows):
    params = {
        "source": "math_jsonl",
        "math_jsonl": {"train": jsonl("train.jsonl", train_rows), "test": jsonl("test.jsonl", test_rows)},
        "easy_levels": [1, 2, 3],
        "valid_size": 0,
        "seed": 0,
        "min_step_chars": 40,
        "subset": None,
    }
    run(label, "prepare_data.py", params, *prepare_outputs(), out=str(work / "data"))


prepare("MATH train row with a malformed JSON line", [good_math, '{"problem": "2+2?", '], [good_math])
bad = work / "utf.jsonl"
bad.write_bytes(json.dumps(good_math).encode() + b"\n" + b'{"problem": "caf\xe9"}\n')
params = {
    "source": "math_jsonl",
    "math_jsonl": {"train": str(bad), "test": jsonl("test.jsonl", [good_math])},
    "easy_levels": [1, 2, 3],
    "valid_size": 0,
    "seed": 0,
    "min_step_chars": 40,
    "subset": None,
}
run("MATH train file with a non-UTF-8 byte", "prepare_data.py", params, *prepare_outputs(), out=str(work / "data"))
prepare("test row with level null", [good_math], [{**good_math, "unique_id": "t/1", "level": None}])
prepare("test row with answer null", [good_math], [{**good_math, "unique_id": "t/1", "answer": None}])
prepare(
    "train row with an empty problem",
    [good_math, {**good_math, "unique_id": "a/2", "problem": "  "}],
    [{**good_math, "unique_id": "t/1"}],
)
prepare(
    "train row with level as a string",
    [good_math, {**good_math, "unique_id": "a/2", "level": "Level 2"}],
    [{**good_math, "unique_id": "t/1"}],
)
prepare(
    "train rows with level null / easy answer null (skipped, counted)",
    [{**good_math, "unique_id": f"a/{i}", "problem": f"{i}+1?"} for i in range(3)]
    + [
        {**good_math, "unique_id": "n/1", "problem": "7+7?", "level": None},
        {**good_math, "unique_id": "n/2", "problem": "8+8?", "answer": None},
    ],
    [{**good_math, "unique_id": "t/1"}],
)
print(
    "  summary:",
    json.loads((work / "data/summary.json").read_text()).get("dropped", (work / "data/summary.json").read_text()[:300]),
)
sample = {"unique_id": "q1", "level": 1, "sample_index": 0, "completion": "1 + 1 = 2.\n\n# Answer\n\n2"}
run(
    "samples file with a truncated line",
    "grade_train.py",
    {"mode": "lenient", "timeout": 5, "workers": 1},
    "--samples",
    jsonl("s.jsonl", [sample, '{"unique_id": "q2"']),
    "--answers",
    jsonl("e.jsonl", [{"unique_id": "q1", "answer": "2"}]),
    "--out",
    str(work / "graded.jsonl"),
    out=str(work / "graded.jsonl"),
)
run(
    "samples file missing `completion`",
    "evaluate.py",
    {"mode": "lenient", "timeout": 5, "workers": 1},
    "--samples",
    jsonl("s2.jsonl", [{"unique_id": "q1", "sample_index": 0}]),
    "--gold",
    jsonl("g.jsonl", [{"unique_id": "q1", "answer": "2"}]),
    "--out",
    str(work / "eval.jsonl"),
    out=str(work / "eval.jsonl"),
)
run(
    "scores with NaN",
    "rl_data.py",
    {"easy_levels": [1, 2, 3], "selection": {"aggregation": "min"}},
    "--algorithm",
    "dpo",
    "--graded",
    jsonl("gr.jsonl", [{**sample, "correct": True}]),
    "--scores",
    jsonl("sc.jsonl", ['{"unique_id": "q1", "sample_index": 0, "step_scores": [NaN]}']),
    "--questions",
    jsonl("q.jsonl", [{"unique_id": "q1", "problem": "1+1"}]),
    "--out",
    str(work / "pairs.jsonl"),
    "--stats",
    str(work / "pairs.stats.json"),
    out=str(work / "pairs"),
)
run(
    "scores missing a sample",
    "rl_data.py",
    {"easy_levels": [1, 2, 3], "selection": {"aggregation": "min"}},
    "--algorithm",
    "rest_em",
    "--graded",
    jsonl("gr.jsonl", [{**sample, "correct": True}]),
    "--scores",
    jsonl("sc2.jsonl", []),
    "--questions",
    jsonl("q.jsonl", [{"unique_id": "q1", "problem": "1+1"}]),
    "--out",
    str(work / "kept.jsonl"),
    "--stats",
    str(work / "kept.stats.json"),
    out=str(work / "kept"),
)
prm = {"question": {"problem": "1+1?"}, "label": {"steps": []}}
run(
    "PRM800K record without steps (skipped, counted)",
    "prm_data.py",
    {
        "source": "prm800k",
        "easy_levels": [1, 2, 3],
        "prm800k": {"files": [jsonl("prm.jsonl", [prm])]},
        "grading": {},
        "sampling": {},
    },
    "--math-files",
    jsonl("m.jsonl", [good_math]),
    "--test-questions",
    jsonl("tq.jsonl", []),
    "--out",
    str(work / "prm.jsonl.out"),
    "--stats",
    str(work / "prm.stats.json"),
    out=str(work / "prm.jsonl.out"),
)
print("  stats:", json.loads((work / "prm.stats.json").read_text())["counts"])
for label, text in [
    ("config: sft.learning_rate: fast", "sft:\n  learning_rate: fast\n"),
    ("config: rl.ppo.kl_coeff (typo)", "rl:\n  ppo:\n    kl_coeff: 0.1\n"),
]:
    cfg = work / "bad.yaml"
    cfg.write_text(text)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work / "wf"),
            "--configfile",
            str(cfg),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    msg = [line for line in (r.stdout + r.stderr).splitlines() if "field" in line]
    print(f"- {label}: exit {r.returncode}; `{msg[0].strip() if msg else '?'}`")
