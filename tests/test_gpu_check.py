"""`make gpu-check` without a GPU: its steps, how it runs and records them, its summary."""

import importlib.util
import sys

import torch

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "tools" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(gpu_check)


def test_the_steps_cover_tests_benchmarks_and_the_workflow(tmp_path):
    steps = {step.name: step for step in gpu_check.steps("python", tmp_path)}
    assert list(steps) == ["CUDA tests", "sampling throughput", "training throughput", "tiny workflow on the GPU"]
    assert steps["CUDA tests"].command[-5:] == ["-m", "cuda", "-q", "-rs", "tests"]
    assert steps["sampling throughput"].command[-2:] == ["128", "512"]
    assert (
        "smollm2-135m" in steps["sampling throughput"].command
        and "tinyllama-1.1b" in steps["sampling throughput"].command
    )
    assert str(tmp_path / "gpu.yaml") in steps["tiny workflow on the GPU"].command
    assert sum(step.timeout_s for step in steps.values()) <= 16 * 60  # each bounded; the whole run ~8 min


def test_a_step_passes_fails_times_out_or_is_skipped():
    python = sys.executable
    passed = gpu_check.run_step(gpu_check.Step("ok", [python, "-c", "print('fine')"], 30))
    failed = gpu_check.run_step(gpu_check.Step("bad", [python, "-c", "import sys; print('boom'); sys.exit(3)"], 30))
    slow = gpu_check.run_step(
        gpu_check.Step("slow", [python, "-c", "import time; print('begun', flush=True); time.sleep(30)"], 1)
    )
    skipped = gpu_check.run_step(gpu_check.Step("needs", [python, "-c", "pass"], 30, ("no_such_module_here",)))
    assert (passed.status, passed.output.strip()) == ("passed", "fine")
    assert failed.status == "failed (exit 3)" and "boom" in failed.output
    assert slow.status == "timed out after 1 s" and "begun" in slow.output
    assert skipped.status == "skipped" and "no_such_module_here" in skipped.output
    markdown = gpu_check.summary([passed, failed, slow, skipped], "test device", {"extra": "a table"})
    assert "| bad | failed (exit 3) |" in markdown and "## slow: timed out after 1 s" in markdown
    assert "boom" in markdown and "## extra\n\na table" in markdown


def test_dry_run_writes_the_summary_and_no_cuda_stops(tmp_path, capsys):
    out = tmp_path / "check.md"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("| not run |") == 4 and "bench/train_throughput.py" in text
    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", str(out)]) == 2
        assert "no CUDA device" in capsys.readouterr().err
