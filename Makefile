# `make run`:  build the locked environment ($(VENV)) if it is missing or stale, then run the
#              default (offline) DAG on 2 cores.
# `make test`: the same environment, then the test suite.
# `make lock`: re-resolve requirements.lock from pyproject.toml + requirements.in (then `make test`).
# Every target installs exactly requirements.lock: what the tests passed with (README, "Installation").
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
VENV_PYTHON := $(VENV)/bin/python
PIP := $(VENV_PYTHON) -m pip install --disable-pip-version-check
INSTALLED := $(VENV)/.easy2hard-installed

.PHONY: setup run dry-run lint test report lock clean

$(INSTALLED): requirements.lock requirements-nodeps.lock pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -r requirements-nodeps.lock
	$(PIP) --no-deps -e .
	touch $@

setup: $(INSTALLED)

run: setup
	$(VENV_PYTHON) -m snakemake --cores $(CORES)

dry-run: setup
	$(VENV_PYTHON) -m snakemake -n --cores $(CORES)

lint: setup
	$(VENV_PYTHON) -m snakemake --lint

report: run
	$(VENV_PYTHON) -m snakemake --cores $(CORES) --report results/report.html

test: setup
	$(VENV_PYTHON) -m pytest

lock:
	PYTHON=$(PYTHON) tools/refresh_lock.sh

clean:
	rm -rf results .snakemake
