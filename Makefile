# The front door of the benchmark kit: `make help` lists everything.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# Cloud and publishing settings live in .env (see .env.example); Make variables override them.
-include .env
ENV_FILE_VARS := $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' .env 2>/dev/null)
ifneq ($(ENV_FILE_VARS),)
export $(ENV_FILE_VARS)# a bare `export` would export every Make variable
endif

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
RUNNER      ?= DirectRunner## DirectRunner (local, default) or DataflowRunner
PROFILE     ?= tuned## run profile: tuned (the kit's settings) or beam (Beam's own benchmark settings)
N           ?=## items per benchmark (default: the matrix's local profile / full dataset)
BATCH_SIZE  ?=## fixed batch size (default: the matrix's)
INPUT       ?=## input list to use instead of the default (local file, or gs:// on Dataflow)
REPEATS     ?=## make perf / compare-profiles: repeats per benchmark, median reported (default 3)
BENCH       ?=## make sweep / compare-profiles: the benchmark
WEIGHTS     ?= random## model weights for `make models`: random (offline) or pretrained
RESULTS     ?= results## the local results store
FAIL_ON_REGRESSION ?=## 1: make report exits 3 when a recent regression is flagged (nightly CI)
DRY_RUN     ?=## 1 with RUNNER=DataflowRunner: build the job offline into results/dataflow-jobs/
LAYOUT      ?=## worker layout PxT: SDK processes x torch threads (default: the matrix's)
BATCH_SIZES ?=## make sweep: comma-separated batch sizes (default 4,8,16,32)
LAYOUTS     ?=## make sweep: layouts (default 1x2,2x1,2x2); make perf: more layouts to compare
PERF_BENCHMARKS ?=## make perf: only these benchmarks (default: all this machine can run)
BATCHINGS   ?=## make sweep, BERT: padded,length (default both)
BATCHING    ?=## BERT batching: padded or length (default: the matrix's)
CROSS_PROFILE ?=## 1: make compare compares runs of different profiles anyway (flagged)
BENCHMARKS  := $(shell $(PYTHON) -m pipelines.matrix names)
IMAGES      := $(shell $(PYTHON) -m pipelines.matrix images)

# Worker images: versions come from requirements/ and .python-version, never from :latest.
BUILDER     ?= docker## image builder: docker, podman or buildah
REGISTRY    ?=## e.g. us-central1-docker.pkg.dev/PROJECT/REPO (needed by push and Dataflow)
IMAGE_TAG   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
PY_MINOR    := $(shell cat .python-version)
BEAM_VERSION        := $(shell sed -n 's/^apache-beam==//p' requirements/worker.txt)
TORCH_VERSION       := $(shell sed -n 's/^torch==//p' requirements/torch-local.txt)
TORCHVISION_VERSION := $(shell sed -n 's/^torchvision==//p' requirements/torch-local.txt)
image_ref = $(or $(REGISTRY),local)/beam-bench-$(1):$(IMAGE_TAG)

QUIET_PIP   := 2>&1 | sed '/is ignored: it is neither/d'
RUN_ARGS     = --runner $(RUNNER) --results-dir $(RESULTS) $(if $(N),--items $(N)) \
               $(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(INPUT),--input $(INPUT)) \
               $(if $(DRY_RUN),--dry-run) $(if $(LAYOUT),--layout $(LAYOUT)) \
               $(if $(BATCHING),--batching $(BATCHING)) --profile $(PROFILE)

.PHONY: help setup lock models data $(addprefix bench-,$(BENCHMARKS)) bench-all perf sweep compare-profiles gpu-check report compare publish \
        images image-cpu $(addprefix image-,$(IMAGES)) push test test-servers lint doctor clean needs-bench

help: ## list targets and variables
	@echo "Benchmark kit for Apache Beam RunInference with PyTorch models"
	@echo
	@echo "Targets:"
	@grep -hE '^[a-zA-Z0-9_% -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | \
	  awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  bench-<name>           run one benchmark; names: $(BENCHMARKS)"
	@echo "  image-<name>           build one worker image with its family's models; names: $(IMAGES)"
	@echo "                         (image-gpu: CUDA for the T4; image-cpu: both CPU images)"
	@echo
	@echo "Variables (make VAR=value):"
	@grep -hE '^[A-Z_]+ +\?=.*## ' $(MAKEFILE_LIST) | sed -E 's/ +\?= *([^#]*)## /\t\1\t/' | \
	  awk -F'\t' '{printf "  %-19s %-13s %s\n", $$1, $$2, $$3}'

# --- set-up: venv with pinned installs ------------------------------------------------------
$(VENV)/.base: requirements/base.txt requirements/worker.txt requirements/torch-local.txt requirements/no-deps.txt
	@$(PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "$(PY_MINOR)" else \
	  "$(PYTHON) is Python " + v + ": the worker images use $(PY_MINOR); set PYTHON=python$(PY_MINOR)")'
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

lock: ## re-resolve requirements/base.in into the pinned worker.txt, base.txt and torch-local.txt
	PYTHON=$(PYTHON) infra/lock-requirements.sh

models: setup ## write model state dicts (WEIGHTS=random|pretrained) and the bert vocab
	$(PY) -m pipelines.models --weights $(WEIGHTS) --out models

data: models ## generate the local datasets (images and sentences)
	$(PY) -m pipelines.data --out data $(if $(N),--items $(N))

# --- benchmarks -------------------------------------------------------------------------------
$(addprefix bench-,$(BENCHMARKS)): bench-%: $(if $(filter DirectRunner,$(RUNNER)),data,setup)
	$(PY) -m pipelines.run $* $(RUN_ARGS)

bench-all: $(if $(filter DirectRunner,$(RUNNER)),data,setup) ## every benchmark the hardware allows, the summary, the report
	$(PY) -m pipelines.bench_all $(RUN_ARGS)

perf: data ## Beam pipeline vs plain PyTorch loop for every CPU benchmark: throughput and efficiency
	$(PY) -m pipelines.perf --profile $(PROFILE) $(if $(N),--items $(N)) $(if $(REPEATS),--repeats $(REPEATS)) \
	  $(if $(LAYOUTS),--layouts $(LAYOUTS)) $(PERF_BENCHMARKS)

compare-profiles: $(if $(BENCH),data,needs-bench) ## BENCH=<name>: tuned then beam profile back to back, REPEATS times; median beam/tuned ratios
	$(PY) -m pipelines.compare_profiles $(BENCH) --results-dir $(RESULTS) \
	  $(if $(N),--items $(N)) $(if $(REPEATS),--repeats $(REPEATS))

report: setup ## write results/report.html (plots, percentiles, cost, regressions) and regressions.json
	$(PY) -m pipelines.report --results-dir $(RESULTS) $(if $(FAIL_ON_REGRESSION),--fail-on-regression)

compare: setup ## compare two runs (A=<run> B=<run>; default: latest vs previous of the same benchmark)
	$(PY) -m pipelines.report.compare --results-dir $(RESULTS) $(if $(CROSS_PROFILE),--cross-profile) $(A) $(B)

publish: setup ## send unpublished run records to InfluxDB/BigQuery (RUN=<id> resends one)
	$(PY) -m pipelines.publish --results-dir $(RESULTS) $(if $(RUN),--run $(RUN))

# --- worker images and Dataflow ----------------------------------------------------------------
images: $(addprefix image-,$(IMAGES)) ## build every worker image, one per benchmark family (image-<name>)

image-cpu: image-cpu-resnet image-cpu-bert ## build both CPU images (ResNet and BERT families)

$(addprefix image-,$(IMAGES)): image-%: ## build one worker image (CPU, or CUDA for the T4) with its family's models baked in
	$(BUILDER) build -f docker/Dockerfile.$(firstword $(subst -, ,$*)) -t $(call image_ref,$*) \
	  --build-arg PYTHON_VERSION=$(PY_MINOR) --build-arg BEAM_VERSION=$(BEAM_VERSION) \
	  --build-arg TORCH_VERSION=$(TORCH_VERSION) --build-arg TORCHVISION_VERSION=$(TORCHVISION_VERSION) \
	  --build-arg MODELS="$(shell $(PYTHON) -m pipelines.matrix models $*)" \
	  --build-arg GIT_SHA=$(shell git rev-parse HEAD 2>/dev/null) .
	@echo "built $(call image_ref,$*)"

push: ## push every image to REGISTRY and record tag + digest (build/image-*.digest): launches use image@sha256
	@test -n "$(REGISTRY)" || { echo "error: push needs REGISTRY (in .env or REGISTRY=...)" >&2; exit 2; }
	mkdir -p build
	for variant in $(IMAGES); do \
	  ref=$(REGISTRY)/beam-bench-$$variant:$(IMAGE_TAG); \
	  if [ "$(BUILDER)" = docker ]; then \
	    docker push $$ref && digest=$$(docker inspect --format '{{index .RepoDigests 0}}' $$ref); \
	  else \
	    $(BUILDER) push --digestfile build/image-$$variant.pushed $$ref && digest=$$(cat build/image-$$variant.pushed); \
	  fi || exit 1; \
	  $(PY) -m pipelines.dataflow record-digest build/image-$$variant.digest $$ref "$$digest" || exit 1; \
	done

sweep: $(if $(BENCH),data,needs-bench) ## one benchmark over batch sizes x worker layouts (BENCH=, BATCH_SIZES=, LAYOUTS=, N=, REPEATS=)
	$(PY) -m pipelines.sweep $(BENCH) --results-dir $(RESULTS) $(if $(N),--items $(N)) \
	  $(if $(BATCH_SIZES),--batch-sizes $(BATCH_SIZES)) $(if $(LAYOUTS),--layouts $(LAYOUTS)) \
	  $(if $(BATCHINGS),--batchings $(BATCHINGS)) $(if $(REPEATS),--repeats $(REPEATS))

needs-bench:
	@echo "error: make $(MAKECMDGOALS) needs BENCH=<name>; names: $(BENCHMARKS)" >&2; exit 2

gpu-check: data ## on a GPU machine: NVML reads, resnet152-gpu on CUDA, efficiency vs a plain CUDA loop
	$(PY) -m pipelines.gpu_check

# --- quality ----------------------------------------------------------------------------------
test: $(VENV)/.test ## run the test suite (starts the servers it needs; a last line names any skip)
	$(PY) -m pytest -p no:cacheprovider tests

# The Debian packages the tests start: InfluxDB 1.x, VictoriaMetrics, headless Chromium (and its
# fonts) for the report render check. The BigQuery emulator comes from requirements/test.txt.
TEST_SERVER_PACKAGES := influxdb victoria-metrics chromium fonts-liberation
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
test-servers: ## install the Debian packages the tests need (InfluxDB, VictoriaMetrics, Chromium)
	@missing=$$(for p in $(TEST_SERVER_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "test servers: all installed ($(TEST_SERVER_PACKAGES))"; exit 0; fi; \
	echo "test servers: installing" $$missing; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

lint: $(VENV)/.test ## ruff on the code, hadolint on the Dockerfiles
	$(VENV)/bin/ruff check pipelines tests
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

doctor: ## one screen: venv, models, data, GPU, what can run here, publishing and Dataflow settings
	@$(PY) -m pipelines.doctor

clean: ## remove generated data, models, results and the venv
	rm -rf data models $(RESULTS) $(VENV) build
