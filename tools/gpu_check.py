"""`make gpu-check`: everything the project knows to check on one CUDA GPU, in one run (~8 min on
an H100/H200), summarised into one markdown file (default `gpu_check.md`):

1. the CUDA tests (`pytest -m cuda`: compiled decode against `generate`, sampling distribution,
   DeepSpeed ZeRO-2 bf16 SFT and reward-model steps, packing in bf16, evaluator scoring);
2. `bench/sample_throughput.py` (SmolLM2-135M and TinyLlama-1.1B shapes, 128 and 512 sequences,
   warmed up) and `bench/train_throughput.py` (1.1B shape, ours against HF Trainer + DeepSpeed);
3. the tiny workflow config end to end on the GPU (Snakemake; skipped, and said so, without it),
   with its report's main table.

Each step runs in its own process with a time limit; a failing step is recorded and the next runs.
Without a CUDA device it stops at once (`--dry-run` lists the steps instead). The README's GPU
section says how to carry the packages a bare GPU image lacks.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    needs: tuple[str, ...] = ()  # modules without which the step is skipped (named in the summary)


@dataclass
class Outcome:
    step: Step
    status: str  # passed | failed | timed out | skipped | not run
    seconds: float
    output: str


def steps(python: str, workdir: Path, quick: bool = False) -> list[Step]:
    sequences = ["128"] if quick else ["128", "512"]
    tiny_config = [str(REPO / "config.yaml"), str(REPO / "tests" / "configs" / "tiny.yaml"), str(workdir / "gpu.yaml")]
    return [
        Step("CUDA tests", [python, "-m", "pytest", "-m", "cuda", "-q", "-rs", "tests"], 240, ("pytest",)),
        Step(
            "sampling throughput",
            [
                python,
                "bench/sample_throughput.py",
                "--shapes",
                "smollm2-135m",
                "tinyllama-1.1b",
                "--sequences",
                *sequences,
            ],
            240,
        ),
        Step(
            "training throughput",
            [python, "bench/train_throughput.py", "--steps", "3" if quick else "5"],
            180,
            ("deepspeed",),
        ),
        Step(
            "tiny workflow on the GPU",
            [
                python,
                "-m",
                "snakemake",
                "--snakefile",
                str(REPO / "Snakefile"),
                "--cores",
                "8",
                "--resources",
                "gpu=1",
                "--configfile",
                *tiny_config,
                "--directory",
                str(workdir / "tiny"),
            ],
            300,
            ("snakemake", "math_verify"),
        ),
    ]


def write_gpu_overlay(workdir: Path) -> None:
    """The tiny config on one GPU: training and sampling jobs ask for it (DeepSpeed where installed)."""
    (workdir / "gpu.yaml").write_text("compute: {train_gpus: 1, inference_gpus: 1}\nsft: {deepspeed: auto}\n")


def run_step(step: Step) -> Outcome:
    missing = [name for name in step.needs if importlib.util.find_spec(name) is None]
    if missing:
        return Outcome(
            step, "skipped", 0.0, f"not installed: {', '.join(missing)} (README, GPU section: carry its wheels)"
        )
    start = time.perf_counter()
    try:
        result = subprocess.run(step.command, cwd=REPO, capture_output=True, text=True, timeout=step.timeout_s)
        status, output = (
            "passed" if result.returncode == 0 else f"failed (exit {result.returncode})",
            result.stdout + result.stderr,
        )
    except subprocess.TimeoutExpired as expired:
        status = f"timed out after {step.timeout_s} s"
        output = "".join(
            part.decode() if isinstance(part, bytes) else part or "" for part in (expired.stdout, expired.stderr)
        )
    return Outcome(step, status, time.perf_counter() - start, output)


def tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def summary(outcomes: list[Outcome], device: str, extra: dict[str, str]) -> str:
    """The markdown summary: a table of steps, then each step's command and the end of its output."""
    rows = [f"| {o.step.name} | {o.status} | {o.seconds:.0f} |" for o in outcomes]
    parts = [
        f"# GPU check\n\nDevice: {device}. Total {sum(o.seconds for o in outcomes):.0f} s.\n",
        "| step | result | seconds |\n|---|---|---:|",
        *rows,
        "",
    ]
    for o in outcomes:
        parts += [
            f"## {o.step.name}: {o.status}\n",
            f"`{' '.join(o.step.command)}`\n",
            "```",
            tail(o.output, 40) or "(no output)",
            "```",
            "",
        ]
    for title, text in extra.items():
        parts += [f"## {title}\n", text, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "gpu_check.md")
    parser.add_argument("--quick", action="store_true", help="smaller benchmarks (128 sequences, 3 training steps)")
    parser.add_argument("--dry-run", action="store_true", help="list the steps and write the summary without running")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.dry_run:
        print("gpu-check: no CUDA device here; nothing to check (--dry-run lists the steps)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (dry run)"
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    write_gpu_overlay(workdir)
    outcomes = []
    for step in steps(sys.executable, workdir, args.quick):
        outcome = Outcome(step, "not run", 0.0, "") if args.dry_run else run_step(step)
        print(f"gpu-check: {step.name}: {outcome.status} ({outcome.seconds:.0f} s)", file=sys.stderr, flush=True)
        outcomes.append(outcome)
    report = workdir / "tiny" / "results" / "report" / "report.md"
    extra = {}
    if report.exists():
        text = report.read_text()
        start = text.find("## Main result")
        extra["tiny workflow: main table"] = text[start : text.find("\n## ", start + 3)] if start >= 0 else text[:3000]
    args.out.write_text(summary(outcomes, device, extra))
    print(f"gpu-check: summary in {args.out}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(o.status in ("passed", "skipped", "not run") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
