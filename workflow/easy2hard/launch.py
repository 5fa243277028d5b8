"""How a training job is started: plain Python on CPU or one GPU, one process per GPU with
torchrun beyond that, and an environment DeepSpeed's op builder can parse."""

from __future__ import annotations

import os
import re


# compute.cpu_bf16 reaches every job, and the processes torchrun or vLLM start, as this variable
# (modeling.cpu_bf16 reads it).
CPU_BF16_ENV = "EASY2HARD_CPU_BF16"


def job_environment(cpu_bf16: bool) -> str:
    """The variable assignments a stage command starts with (shell syntax, empty when none)."""
    return f"{CPU_BF16_ENV}=1 " if cpu_bf16 else ""


def launch_command(python: str, gpus: int) -> str:
    """The command prefix of a training script: `python` for 0 or 1 GPU, torchrun for more.

    torchrun (torch.distributed.run) starts one process per GPU and sets RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR and MASTER_PORT, which DeepSpeed reads; --standalone picks a free
    rendezvous port, so two jobs on one node do not collide.
    """
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    if gpus <= 1:
        return python
    return f"{python} -m torch.distributed.run --standalone --nproc_per_node={gpus}"


def normalize_cuda_arch_list(value: str) -> str:
    """'9.0a' -> '9.0' (Hopper images set the 'a' feature suffix, which DeepSpeed's op builder
    cannot parse); also accepts ';', ',' or space separated lists and '+PTX'."""
    archs = [arch for arch in re.split(r"[;,\s]+", value.strip()) if arch]
    return ";".join(re.sub(r"^(\d+\.\d+)[af](\+PTX)?$", r"\1\2", arch) for arch in archs)


def prepare_environment() -> None:
    """Normalise TORCH_CUDA_ARCH_LIST in this process (before DeepSpeed is imported)."""
    value = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if value:
        os.environ["TORCH_CUDA_ARCH_LIST"] = normalize_cuda_arch_list(value)
