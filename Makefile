# The front door of the benchmark kit: `make help` lists everything.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# Cloud and publishing settings live in .env (see .env.example); Make variables override them.
-include .env
export $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' .env 2>/dev/null)

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
RUNNER      ?= DirectRunner## DirectRunner (local, default) or DataflowRunner
N           ?=## items per benchmark (default: the matrix's local profile / full dataset)
BATCH_SIZE  ?=## fixed batch size (default: the matrix's)
WEIGHTS     ?= random## model weights for `make models`: random (offline) or pretrained
RESULTS     ?= results## the local results store
BENCHMARKS  := $(shell $(PYTHON) -m pipelines.matrix names)

QUIET_PIP   := 2>&1 | sed '/is ignored: it is neither/d'
RUN_ARGS     = --runner $(RUNNER) --results-dir $(RESULTS) $(if $(N),--items $(N)) \
               $(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(DRY_RUN),--dry-run)

.PHONY: help setup models data $(addprefix bench-,$(BENCHMARKS)) bench-all perf publish test lint clean

help: ## list targets and variables
	@echo "Benchmark kit for Apache Beam RunInference with PyTorch models"
	@echo
	@echo "Targets:"
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | \
	  awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  bench-<name>           one benchmark; names: $(BENCHMARKS)"
	@echo
	@echo "Variables (make VAR=value):"
	@grep -hE '^[A-Z_]+ +\?=.*## ' $(MAKEFILE_LIST) | sed -E 's/ +\?= *([^#]*)## /\t\1\t/' | \
	  awk -F'\t' '{printf "  %-12s %-14s %s\n", $$1, $$2, $$3}'

# --- set-up: venv with pinned installs ------------------------------------------------------
$(VENV)/.base: requirements/base.txt requirements/torch-local.txt requirements/no-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/torch-local.txt \
	  -r requirements/base.txt $(QUIET_PIP)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements/no-deps.txt $(QUIET_PIP)
	$(PY) -c "import apache_beam, torch, torchvision, transformers"
	touch $@

$(VENV)/.test: $(VENV)/.base requirements/test.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/test.txt $(QUIET_PIP)
	$(PY) -c "import pytest, bqemulator, duckdb"
	touch $@

setup: $(VENV)/.base ## create the venv with the pinned requirements

models: setup ## write model state dicts (WEIGHTS=random|pretrained) and the bert vocab
	$(PY) -m pipelines.models --weights $(WEIGHTS) --out models

data: models ## generate the local datasets (images and sentences)
	$(PY) -m pipelines.data --out data $(if $(N),--items $(N))

# --- benchmarks -------------------------------------------------------------------------------
bench-%: $(if $(filter DirectRunner,$(RUNNER)),data,setup) ## run one benchmark (see names below)
	$(PY) -m pipelines.run $* $(RUN_ARGS)

bench-all: $(if $(filter DirectRunner,$(RUNNER)),data,setup) ## every benchmark the hardware allows, then the summary
	$(PY) -m pipelines.bench_all $(RUN_ARGS)

perf: data ## Beam pipeline vs plain PyTorch loop for every CPU benchmark: throughput and efficiency
	$(PY) -m pipelines.perf $(if $(N),--items $(N))

publish: setup ## send unpublished run records to InfluxDB/BigQuery (RUN=<id> resends one)
	$(PY) -m pipelines.publish --results-dir $(RESULTS) $(if $(RUN),--run $(RUN))

# --- quality ----------------------------------------------------------------------------------
test: $(VENV)/.test ## run the test suite (starts the servers it needs)
	$(PY) -m pytest -p no:cacheprovider tests

lint: $(VENV)/.test ## ruff on the code, hadolint on the Dockerfiles
	$(VENV)/bin/ruff check pipelines tests

clean: ## remove generated data, models, results and the venv
	rm -rf data models $(RESULTS) $(VENV)
