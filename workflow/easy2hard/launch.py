"""How a training job is started: plain Python on CPU or one GPU, one process per GPU with
torchrun beyond that, and an environment DeepSpeed's op builder can parse."""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys

# compute.cpu_bf16 reaches every job, and the processes torchrun or vLLM start, as this variable
# (modeling.cpu_bf16 reads it).
CPU_BF16_ENV = "EASY2HARD_CPU_BF16"


def job_environment(cpu_bf16: bool) -> str:
    """The variable assignments a stage command starts with (shell syntax, empty when none)."""
    return f"{CPU_BF16_ENV}=1 " if cpu_bf16 else ""


def launch_command(python: str, gpus: int, nodes: int = 1) -> str:
    """The command prefix of a training script: `python` for 0 or 1 GPU, torchrun for more.

    torchrun (torch.distributed.run) starts one process per GPU and sets RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR and MASTER_PORT, which DeepSpeed reads; --standalone picks a free
    rendezvous port, so two jobs on one node do not collide. Several nodes: this module's own
    launcher, which reads the SLURM allocation when the job starts (`multinode_command`).
    """
    if gpus < 0 or nodes < 1:
        raise ValueError(f"need gpus >= 0 and nodes >= 1, got gpus={gpus}, nodes={nodes}")
    if nodes > 1:
        if gpus < 1:
            raise ValueError(f"a training job on {nodes} nodes needs GPUs (compute.train_gpus = {gpus})")
        return f"{python} -m easy2hard.launch --nodes {nodes} --gpus-per-node {gpus} --"
    if gpus <= 1:
        return python
    return f"{python} -m torch.distributed.run --standalone --nproc_per_node={gpus}"


RENDEZVOUS_PORT = 29500  # torchrun's default; one rendezvous per SLURM job, keyed by the job id


def multinode_command(env: dict, nodes: int, gpus_per_node: int, python: str, argv: list[str]) -> list[str]:
    """The command that runs `argv` (a script and its arguments) on every node of a SLURM
    allocation: srun starts one torchrun per node, and the torchruns meet through a c10d
    rendezvous on the node running this (the allocation's first node, where the batch step runs),
    keyed by the SLURM job id; each starts `gpus_per_node` processes."""
    missing = [name for name in ("SLURM_JOB_ID", "SLURM_NNODES") if not env.get(name)]
    if missing:
        raise RuntimeError(
            f"a training job on {nodes} nodes runs inside a SLURM allocation; {', '.join(missing)}"
            " not set (submit with --profile profiles/slurm, or set compute.train_nodes: 1)"
        )
    if int(env["SLURM_NNODES"]) != nodes:
        raise RuntimeError(
            f"compute.train_nodes = {nodes} but the SLURM allocation has SLURM_NNODES ="
            f" {env['SLURM_NNODES']} nodes (the rule's `nodes` resource requests them)"
        )
    head = env.get("SLURMD_NODENAME") or socket.gethostname()
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc_per_node={gpus_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={head}:{RENDEZVOUS_PORT}",
        f"--rdzv_id={env['SLURM_JOB_ID']}",
    ]
    return srun + torchrun + list(argv)


def main(argv: list[str] | None = None) -> None:
    """`python -m easy2hard.launch --nodes N --gpus-per-node G -- script.py ARGS`: replaces
    itself with `multinode_command` for this allocation."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the script and its arguments, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no script to run after --")
    full = multinode_command(dict(os.environ), args.nodes, args.gpus_per_node, sys.executable, command)
    print("launch:", " ".join(full), file=sys.stderr, flush=True)
    os.execvp(full[0], full)


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


if __name__ == "__main__":
    main()
