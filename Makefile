# One entry point for humans and CI. `make test` builds .venv on a fresh machine and
# reuses it while pyproject.toml is unchanged (the stamp file depends on it).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test lint format demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[demo,dev]'
	touch $(STAMP)

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

# The whole MEDUSA DAG on the embedded demo, then its headline table (SPEC 4.5).
demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake soup --configfile config/demo.yaml \
		--cores $(DEMO_CORES) --resources gpu=$(DEMO_GPU_SLOTS)
	@cat results/report/headline.md
