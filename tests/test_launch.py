"""Launching on GPU nodes and clusters: launcher commands, CUDA arch normalisation, profiles."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import MATH_DIR, PRM800K_EXAMPLES_DIR, REPO_ROOT
from easy2hard.launch import launch_command, normalize_cuda_arch_list, prepare_environment


def test_plain_python_for_cpu_and_one_gpu():
    assert launch_command("python", 0) == "python"
    assert launch_command("/x/bin/python", 1) == "/x/bin/python"


def test_torchrun_one_process_per_gpu():
    command = launch_command("python", 8)
    assert command.startswith("python -m torch.distributed.run ")
    assert "--nproc_per_node=8" in command and "--standalone" in command
    with pytest.raises(ValueError):
        launch_command("python", -1)


@pytest.mark.parametrize(
    "value, expected",
    [("9.0a", "9.0"), ("9.0", "9.0"), ("8.0;9.0a", "8.0;9.0"), ("8.6 9.0a+PTX", "8.6;9.0+PTX"), ("10.0f", "10.0")],
)
def test_cuda_arch_list_is_normalised(value, expected):
    assert normalize_cuda_arch_list(value) == expected


def test_prepare_environment_rewrites_the_variable(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")
    prepare_environment()
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "9.0"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    prepare_environment()
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ


def dry_run(*args):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO_ROOT / "Snakefile"), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def job_block(output: str, rule: str) -> str:
    match = re.search(rf"\nrule {rule}:\n(.*?)(?=\n\n|\Z)", output, re.S)
    assert match, f"no {rule} job in the plan"
    return match.group(1)


needs_math = pytest.mark.skipif(not (MATH_DIR / "train.jsonl").exists() or not PRM800K_EXAMPLES_DIR.exists(),
                                reason="real MATH files or the PRM800K sample records absent")
# The paper preset reads PRM800K (not shipped): planned with the sample records in its place.
PAPER_PRESET = ("--configfile", "configs/paper-llemma7b.yaml", "tests/configs/prm800k_samples.yaml")


@needs_math
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None, reason="slurm plugin absent")
def test_slurm_profile_dry_run_on_the_paper_preset():
    output = dry_run("--profile", "profiles/slurm", *PAPER_PRESET, "--forceall")
    sft = job_block(output, "sft")
    assert "gpu=8" in sft and "gpu_model=" in sft and "tasks=" not in sft
    assert "torch.distributed.run --standalone --nproc_per_node=8" in output
    assert "gpu=1" in job_block(output, "sample")


@needs_math
def test_local_gpu_profile_launches_as_many_processes_as_gpus_granted():
    """A workstation with fewer GPUs than the preset asks for: Snakemake scales the job's `gpu`
    down, and the launcher follows (the global batch is kept by more accumulation)."""
    args = ("--profile", "profiles/local-gpu", *PAPER_PRESET, "--forceall")
    one = dry_run(*args)
    assert "gpu=1" in job_block(one, "sft") and "torch.distributed.run" not in one
    four = dry_run(*args, "--resources", "gpu=4")
    assert "gpu=4" in job_block(four, "sft") and "--nproc_per_node=4" in four


def test_default_config_trains_with_plain_python():
    output = dry_run("--cores", "2", "--forceall", "-p")
    assert "torch.distributed.run" not in output


def test_cpu_bf16_reaches_every_job_and_only_when_asked(tmp_path):
    """compute.cpu_bf16 becomes the variable every stage command starts with."""
    assert "EASY2HARD_CPU_BF16" not in dry_run("--cores", "2", "--forceall", "-p")
    overlay = tmp_path / "bf16.yaml"
    overlay.write_text("compute: {cpu_bf16: true}\n")
    output = dry_run("--cores", "2", "--forceall", "-p", "--configfile", "config.yaml", str(overlay))
    commands = [line.split("Shell command:")[-1].strip() for line in output.splitlines() if "PYTHONPATH=" in line]
    assert commands and all(command.startswith("EASY2HARD_CPU_BF16=1 PYTHONPATH=") for command in commands), commands
