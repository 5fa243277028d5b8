"""Launching on GPU nodes and clusters: launcher commands, CUDA arch normalisation, profiles."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import MATH_DIR, PRM800K_EXAMPLES_DIR, REPO_ROOT
from easy2hard.launch import launch_command, multinode_command, normalize_cuda_arch_list, prepare_environment


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
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def job_block(output: str, rule: str) -> str:
    match = re.search(rf"\nrule {rule}:\n(.*?)(?=\n\n|\Z)", output, re.S)
    assert match, f"no {rule} job in the plan"
    return match.group(1)


needs_math = pytest.mark.skipif(
    not (MATH_DIR / "train.jsonl").exists() or not PRM800K_EXAMPLES_DIR.exists(),
    reason="real MATH files or the PRM800K sample records absent",
)
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


# --- several nodes: srun starts one torchrun per node, c10d rendezvous on the first node -----------------------

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "4", "SLURMD_NODENAME": "gpu-node-07"}


def test_multinode_prefix_hands_over_to_the_launcher():
    assert launch_command("python", 8, nodes=4) == "python -m easy2hard.launch --nodes 4 --gpus-per-node 8 --"
    with pytest.raises(ValueError, match="needs GPUs"):
        launch_command("python", 0, nodes=2)


def test_multinode_command_from_a_slurm_allocation():
    command = multinode_command(SLURM_ENV, 4, 8, "/env/bin/python", ["train.py", "--out", "m"])
    assert command[:5] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert command[5:8] == ["/env/bin/python", "-m", "torch.distributed.run"]
    assert {
        "--nnodes=4",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=gpu-node-07:29500",
        "--rdzv_id=4242",
    } <= set(command)
    assert command[-3:] == ["train.py", "--out", "m"]


def test_multinode_command_outside_slurm_or_on_the_wrong_allocation_says_so():
    with pytest.raises(RuntimeError, match="SLURM_JOB_ID, SLURM_NNODES not set"):
        multinode_command({}, 2, 8, "python", ["train.py"])
    with pytest.raises(RuntimeError, match="train_nodes = 2 but .* SLURM_NNODES = 4"):
        multinode_command(SLURM_ENV, 2, 8, "python", ["train.py"])


@needs_math
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None, reason="slurm plugin absent")
def test_slurm_profile_requests_nodes_and_gpus_per_node_for_multinode_training(tmp_path):
    overlay = tmp_path / "nodes.yaml"
    overlay.write_text("compute: {train_nodes: 4}\n")
    output = dry_run("--profile", "profiles/slurm", *PAPER_PRESET, str(overlay), "--forceall")
    sft = job_block(output, "sft")
    assert "nodes=4" in sft and "gpus_per_node=8" in sft and "--gpus-per-node=8" in sft, sft
    assert "-m easy2hard.launch --nodes 4 --gpus-per-node 8 -- " in output
    assert "gpu=1" in job_block(output, "sample")  # sampling stays on one GPU


WORKER = """
import json, os, sys
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1])
dist.all_reduce(total)
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as handle:
    json.dump({"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": int(total),
               "local_rank": int(os.environ["LOCAL_RANK"]), "master": os.environ["MASTER_ADDR"]}, handle)
dist.destroy_process_group()
"""


def test_launcher_runs_two_processes_that_meet_over_gloo(tmp_path):
    """The multi-node path end to end on one machine: the launcher, a stand-in `srun` (runs the
    command once, as srun does on a one-node allocation), torchrun's c10d rendezvous, and two CPU
    processes that all-reduce over gloo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    srun.chmod(0o755)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "7",
        "SLURM_NNODES": "1",
        "SLURMD_NODENAME": "127.0.0.1",
        "PYTHONPATH": str(REPO_ROOT / "workflow"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "easy2hard.launch",
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--",
            str(worker),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "srun --nodes=1" in result.stderr and "--rdzv_backend=c10d" in result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"], r["sum"], r["local_rank"]) for r in ranks] == [(0, 2, 3, 0), (1, 2, 3, 1)]
