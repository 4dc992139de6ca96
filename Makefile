# One entry point for humans and CI. `make test` builds .venv on a fresh machine from
# requirements.lock and reuses it while pyproject.toml and the lock are unchanged (the stamp file
# depends on both). `make lock` regenerates the lock; `make lock UPGRADE=1` also upgrades it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
CONDA_ENV := envs/medusa.yaml
# The installer and the locker are pinned too: the same bytes install everywhere.
PIP_VERSION := 26.3
UV_VERSION := 0.13.9
LOCK_TOOLS := .lock-tools
UPGRADE ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lock test lint format demo gpu-prepare gpu-rehearsal

install: $(STAMP)

# Exactly the lock, hash-checked; with dependencies resolved (no --no-deps), so pip also proves
# the lock complete. Then medusa itself without touching the stack (the lock carries setuptools),
# and a fresh-process import check that names any mismatched pair (torch/torchaudio).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m medusa.core.install_check
	touch $(STAMP)

# Resolves pyproject.toml (with the demo and dev extras) for every platform, Python 3.11, with
# hashes. uv keeps the pins already in the lock unless UPGRADE=1. Then renders the conda env.
lock:
	test -x $(LOCK_TOOLS)/bin/python || $(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml --extra demo --extra dev --generate-hashes \
		--universal --python-version 3.11 $(if $(UPGRADE),--upgrade) \
		--custom-compile-command 'make lock' -o $(LOCK)
	$(LOCK_TOOLS)/bin/python envs/render_conda_env.py $(LOCK) $(CONDA_ENV)

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile config/demo.yaml --cores 1

format: $(STAMP)
	$(BIN)/ruff check --fix src tests workflow/scripts benchmarks
	$(BIN)/ruff format src tests workflow/scripts benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

test: lint
	$(BIN)/python -m pytest

# The demo's GPU slots: one per GPU; on a CPU-only machine one per core, so that the model jobs
# (single-threaded there, see threads_per_gpu_job in config/demo.yaml) use every core.
DEMO_CORES ?= 2
# Deferred (=): only `make demo` asks nvidia-smi.
GPU_COUNT = $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
DEMO_GPU_SLOTS = $(if $(filter 0,$(GPU_COUNT)),$(DEMO_CORES),$(GPU_COUNT))

# The whole MEDUSA DAG on the embedded demo, then its headline table. The corpus is generated
# first, as a real corpus exists before a run: the workflow plans ASR and features per audio
# partition from the audio it finds when it starts.
demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake demo_corpus --configfile config/demo.yaml \
		--cores $(DEMO_CORES)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake soup --configfile config/demo.yaml \
		--cores $(DEMO_CORES) --resources gpu=$(DEMO_GPU_SLOTS)
	@cat results/report/headline.md

# The GPU check (benchmarks/gpu_check.sh) for a lent GPU machine with no network: gpu-prepare
# fills the ignored .gpu-carry/ (the wheels its image lacks, the CI-sized corpus) and prints the
# device call; gpu-rehearsal runs the check here on the CPU, from a copy of what travels, in a
# Python 3.12 venv with the image's versions (.gpu-rehearsal/). Neither is part of `make test`.
gpu-prepare: $(STAMP)
	$(BIN)/python benchmarks/gpu_prepare.py

gpu-rehearsal: gpu-prepare
	bash benchmarks/gpu_rehearsal.sh
