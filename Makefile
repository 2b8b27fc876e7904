# The front door of the benchmark kit: `make help` lists everything.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# A user's value reaches the shell only as one quoted word: $(call q,VALUE) single-quotes it
# (words of plain characters stay as they are, so `make -n` stays readable).
comma := ,
empty :=
space := $(empty) $(empty)
PLAIN_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z \
  A B C D E F G H I J K L M N O P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 _ - . / : @ + % ,
drop_chars = $(if $(2),$(call drop_chars,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
q = $(if $(and $(1),$(if $(call drop_chars,$(1),$(PLAIN_CHARS)),,plain)),$(1),'$(subst ','\'',$(1))')

# Cloud and publishing settings live in .env (see .env.example); Make variables override them.
# KEY=value lines are read as text, as `make doctor` reads them: no Make expansion, no comments.
ENV_FILE_VARS := $(shell sed -nE 's/^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=.*/\1/p' .env 2>/dev/null | sort -u)
dotenv_value = $(shell sed -nE 's/^[[:space:]]*$(1)[[:space:]]*=[[:space:]]*//p' .env | tail -n 1 | sed -E 's/[[:space:]]+$$//')
$(foreach v,$(ENV_FILE_VARS),$(eval $(v) := $$(call dotenv_value,$(v))))
ifneq ($(ENV_FILE_VARS),)
export $(ENV_FILE_VARS)# a bare `export` would export every Make variable
endif

# Values from the command line (and the environment, for the variables below) are text, not Make
# code: Make would otherwise run a `$$(shell ...)` in them when it expands or exports them.
USER_VARS := PYTHON VENV RUNNER PROFILE N BATCH_SIZE INPUT REPEATS BENCH WEIGHTS RESULTS \
  FAIL_ON_REGRESSION DRY_RUN LAYOUT BATCH_SIZES LAYOUTS PERF_BENCHMARKS BATCHINGS BATCHING \
  CROSS_PROFILE A B RUN BUILDER REGISTRY IMAGE_TAG BASE_IMAGE TORCH_FROM IMAGE_WEIGHTS CA_BUNDLE FORCE \
  IN_IMAGE CONTAINER_CLI ITEMS DEADLINE BUDGET OPTIMIZE OPTIMIZATIONS HF_TOKEN_FILE DECODE
literal = $(eval override $(1) := $$(value $(1)))$(eval export $(1))
$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(call literal,$(v))))
$(foreach v,$(USER_VARS),$(if $(filter environment,$(origin $(v))),$(call literal,$(v))))

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(call q,$(VENV)/bin/python)
RUNNER      ?= DirectRunner## DirectRunner (local, default) or DataflowRunner
PROFILE     ?= tuned## run profile: tuned (the kit's settings) or beam (Beam's own benchmark settings)
N           ?=## items per benchmark (default: the matrix's local profile / full dataset); share: one Dataflow worker's share
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
LAYOUTS     ?=## make sweep: layouts Dataflow can run (default 1xV,Vx1,VxV for V vCPUs); make perf: more layouts to compare
PERF_BENCHMARKS ?=## make perf: only these benchmarks (default: all this machine can run)
BATCHINGS   ?=## make sweep, BERT: padded,length (default both)
BATCHING    ?=## BERT batching: padded or length (default: the matrix's)
CROSS_PROFILE ?=## 1: make compare compares runs of different profiles anyway (flagged)
IN_IMAGE    ?=## 1: a local run's SDK workers run in the benchmark's pushed worker image, as one Dataflow worker
ITEMS       ?=## make plan: items in the job (default: the matrix dataset's, e.g. 50000)
DEADLINE    ?=## make plan: the job's deadline in seconds
BUDGET      ?=## make plan: the job's budget in USD
DECODE      ?=## image classification: cpu (PIL per item, Beam's way) or device (batched on the model's device: nvjpeg on a GPU)
OPTIMIZE    ?=## the loaded model's optimization: none; CPU: channels_last, freeze, compile, bf16, int8; GPU: fp16, bf16 (_channels_last) (default: the profile's)
OPTIMIZATIONS ?=## make sweep: optimizations, comma-separated (default: the profile's)
BENCHMARKS  := $(shell $(call q,$(PYTHON)) -m pipelines.matrix names)
IMAGES      := $(shell $(call q,$(PYTHON)) -m pipelines.matrix images)
ALL_MODELS   = $(shell $(call q,$(PYTHON)) -m pipelines.matrix models)

# Worker images: versions come from requirements/ and .python-version, never from :latest.
BUILDER     ?= docker## image builder: docker, podman or buildah
REGISTRY    ?=## e.g. us-central1-docker.pkg.dev/PROJECT/REPO (needed by push and Dataflow)
IMAGE_TAG   ?=
image_tag    = $(or $(IMAGE_TAG),$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev))
PY_MINOR    := $(shell cat .python-version)
BEAM_VERSION        := $(shell sed -n 's/^apache-beam==//p' requirements/worker.txt)
TORCH_VERSION       := $(shell sed -n 's/^torch==//p' requirements/torch-local.txt)
TORCHVISION_VERSION := $(shell sed -n 's/^torchvision==//p' requirements/torch-local.txt)
image_ref = $(or $(REGISTRY),local)/beam-bench-$(1):$(image_tag)
BASE_IMAGE  ?=## image to build FROM instead of Beam's SDK image (e.g. the stand-in make base-image builds)
TORCH_FROM  ?=## where image builds take torch: PyTorch's index (default, Dataflow), pypi, or a wheel folder
IMAGE_WEIGHTS ?= pretrained## weights baked into images: pretrained (Dataflow) or random (offline builds)
HF_TOKEN_FILE ?=## image-vllm-gpu with pretrained weights: a file with a Hugging Face token that accepted Gemma's terms (a build secret, never in a layer)
CA_BUNDLE   ?= /etc/ssl/certs/ca-certificates.crt## host CA bundle mounted (never baked) into podman/buildah build steps
FORCE       ?=## 1: make base-image rebuilds an existing stand-in
PYPI_CUDA_MAJOR := $(shell sed -n 's/^cuda-toolkit==\([0-9]*\)\..*/\1/p' requirements/torch-local.txt)# PyPI's torch
STANDIN_IMAGE := localhost/beam-sdk-standin:py$(PY_MINOR)-beam$(BEAM_VERSION)
# podman and buildah (builds, IN_IMAGE=1 runs) run as root without a daemon, with this repo's
# storage and runtime settings.
export CONTAINERS_STORAGE_CONF ?= $(CURDIR)/infra/containers/storage.conf
export CONTAINERS_CONF ?= $(CURDIR)/infra/containers/containers.conf
# The builder's flags: podman/buildah cache layers, need no daemon, never pull a named BASE_IMAGE
# (it is local) and see the host's CA bundle during RUN steps only.
BUILD_FLAGS = $(if $(filter podman buildah,$(notdir $(BUILDER))),--layers --isolation chroot \
  --pull=$(if $(BASE_IMAGE),never,missing) $(if $(wildcard $(CA_BUNDLE)),-v $(call q,$(CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro))) \
  $(if $(BASE_IMAGE),--build-arg $(call q,BASE_IMAGE=$(BASE_IMAGE))) --build-arg $(call q,WEIGHTS=$(IMAGE_WEIGHTS)) $(TORCH_ARGS)
# TORCH_FROM=pypi: PyPI's torch builds (no +cpu label); a folder: its wheels first (mounted at /wheels).
TORCH_ARGS = $(if $(TORCH_FROM),--build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg TORCH_LOCAL_VERSION= \
  $(if $(filter pypi,$(TORCH_FROM)),,-v $(call q,$(abspath $(TORCH_FROM)):/wheels:ro) --build-arg TORCH_FIND_LINKS=/wheels))
# Loopback registries (tests, CI) serve plain HTTP; any other registry is pushed to over TLS.
PUSH_FLAGS = $(if $(filter 127.0.0.1:% localhost:%,$(REGISTRY)),--tls-verify=false)

# --- refuse a bad value with one line before anything runs ---------------------------------------
# $(call check,VAR,ERE,what it must be): a set value must match the whole ERE.
check = $(if $(and $($(1)),$(shell [[ $(call q,$($(1))) =~ ^($(2))$$ ]] || echo bad)),\
  $(error error: $(1) must be $(3), not $(call q,$($(1)))))
required = $(if $(strip $($(1))),,$(error error: $(1) must not be empty))
COUNT_RE  := [1-9][0-9]*
LAYOUT_RE := [1-9][0-9]*x[1-9][0-9]*(i[1-9][0-9]*)?
names_re   = $(subst $(space),|,$(strip $(1)))
$(foreach v,RUNNER PROFILE WEIGHTS RESULTS PYTHON VENV BUILDER,$(call required,$(v)))
$(foreach v,BATCH_SIZE REPEATS,$(call check,$(v),$(COUNT_RE),a whole number from 1))
$(call check,N,$(COUNT_RE)|share,a whole number from 1 or share (one Dataflow worker's share))
$(call check,BATCH_SIZES,$(COUNT_RE)($(comma)$(COUNT_RE))*,whole numbers from 1 separated by commas)
$(call check,LAYOUT,$(LAYOUT_RE),a layout PxT such as 1x2)
$(call check,LAYOUTS,$(LAYOUT_RE)($(comma)$(LAYOUT_RE))*,layouts PxT separated by commas)
$(call check,RUNNER,DirectRunner|DataflowRunner,DirectRunner or DataflowRunner)
PROFILES     = $(shell $(call q,$(PYTHON)) -m pipelines.profiles names)
vocab        = $(shell $(call q,$(PYTHON)) -m pipelines.worker.vocab $(1))
$(if $(filter-out tuned,$(PROFILE)),$(call check,PROFILE,$(call names_re,$(PROFILES)),one of: $(PROFILES)))
$(call check,WEIGHTS,random|pretrained,random or pretrained)
# The names the launcher and the workers know (pipelines/worker/vocab.py).
BATCHING_RE := $(call names_re,$(call vocab,batchings))
OPTIMIZATION_RE := $(call names_re,$(call vocab,optimizations))
$(call check,BATCHING,$(BATCHING_RE),one of: $(subst |, ,$(BATCHING_RE)))
DECODE_RE := $(call names_re,$(call vocab,decoders))
$(call check,DECODE,$(DECODE_RE),one of: $(subst |, ,$(DECODE_RE)))
$(call check,OPTIMIZE,$(OPTIMIZATION_RE),one of: $(subst |, ,$(OPTIMIZATION_RE)))
$(call check,OPTIMIZATIONS,($(OPTIMIZATION_RE))($(comma)($(OPTIMIZATION_RE)))*,optimizations ($(subst |, ,$(OPTIMIZATION_RE))) separated by commas)
$(call check,BATCHINGS,($(BATCHING_RE))($(comma)($(BATCHING_RE)))*,$(subst |, and/or ,$(BATCHING_RE)) separated by commas)
$(foreach v,DRY_RUN FAIL_ON_REGRESSION CROSS_PROFILE IN_IMAGE,$(call check,$(v),0|1,1 (on) or 0 (off)))
$(call check,BENCH,$(call names_re,$(BENCHMARKS)),one of: $(BENCHMARKS))
$(call check,PERF_BENCHMARKS,($(call names_re,$(BENCHMARKS)))( +($(call names_re,$(BENCHMARKS))))*,\
  benchmark names separated by spaces)
$(call check,REGISTRY,[A-Za-z0-9][A-Za-z0-9._/:-]*,an image registry path)
$(call check,VENV,[^[:space:]:%]+,a path without spaces$(comma) ':' or '%' (Make targets cannot hold them))
$(call check,IMAGE_WEIGHTS,random|pretrained,random or pretrained)
$(call check,FORCE,0|1,1 (on) or 0 (off))
$(if $(HF_TOKEN_FILE),$(if $(shell test -f $(call q,$(HF_TOKEN_FILE)) || echo missing),\
  $(error error: HF_TOKEN_FILE $(call q,$(HF_TOKEN_FILE)) is not a file)))
# Pretrained Gemma is gated on the hub: its image build needs the token. `make image-vllm-gpu`
# without it is refused before it starts; `make images` builds the others and names it.
HF_TOKEN_MISSING := $(and $(filter pretrained,$(IMAGE_WEIGHTS)),$(if $(HF_TOKEN_FILE),,yes))
HF_TOKEN_NEED := HF_TOKEN_FILE=<a file holding a Hugging Face token that accepted Gemma's \
  terms>$(comma) or IMAGE_WEIGHTS=random
$(if $(and $(filter image-vllm-gpu,$(MAKECMDGOALS)),$(HF_TOKEN_MISSING)),\
  $(error error: image-vllm-gpu with IMAGE_WEIGHTS=pretrained needs $(HF_TOKEN_NEED)))
$(call check,ITEMS,$(COUNT_RE),a whole number from 1)
$(foreach v,DEADLINE BUDGET,$(call check,$(v),[0-9]+(\.[0-9]+)?,a positive number))
$(call check,BASE_IMAGE,[A-Za-z0-9][A-Za-z0-9._/:@-]*,an image reference)
$(call check,IMAGE_TAG,[A-Za-z0-9_][A-Za-z0-9_.-]{0$(comma)127},an image tag)
# make clean's rm -rf: never a folder that holds this one or the home folder
holds_kit_or_home = $(shell f=$$(realpath -m -- $(call q,$(1))) && f=$${f%/} && \
  for d in $(call q,$(CURDIR)) "$$HOME"; do case "$$d/" in ("$$f"/*) echo yes; break;; esac; done)
$(if $(filter clean,$(MAKECMDGOALS)),$(foreach v,RESULTS VENV,$(if $(call holds_kit_or_home,$($(v))),\
  $(error error: make clean will not remove $(v)=$(call q,$($(v))): it holds this folder or your home))))

QUIET_PIP   := 2>&1 | sed '/is ignored: it is neither/d'
RUN_ARGS     = --runner $(call q,$(RUNNER)) --results-dir $(call q,$(RESULTS)) $(ITEMS_ARG) \
               $(if $(BATCH_SIZE),--batch-size $(call q,$(BATCH_SIZE))) $(if $(INPUT),--input $(call q,$(INPUT))) \
               $(if $(filter 1,$(DRY_RUN)),--dry-run) $(if $(LAYOUT),--layout $(call q,$(LAYOUT))) \
               $(if $(BATCHING),--batching $(call q,$(BATCHING))) --profile $(call q,$(PROFILE)) \
               $(if $(filter 1,$(IN_IMAGE)),--in-image) $(if $(OPTIMIZE),--optimize $(call q,$(OPTIMIZE))) \
               $(if $(DECODE),--decode $(call q,$(DECODE)))
ITEMS_ARG    = $(if $(N),--items $(call q,$(N)))
REPEATS_ARG  = $(if $(REPEATS),--repeats $(call q,$(REPEATS)))

# Make exits 2 whenever a recipe fails, whatever the program returned: infra/explain-exit.sh runs
# the program and, when it fails, ends with one line naming its own exit code and what it means.
# $(call explain[,WHAT EXIT 1 MEANS, without commas]) PROGRAM ARGS...
explain = infra/explain-exit.sh $(if $(1),--code-1 $(call q,$(1)))

# What `data` generates (pipelines/data.py): only the input lists of the benchmarks the goals run
# (their tasks' input files), at the count each run takes: N, N=share (each benchmark's own
# share) or its local default. `make data` itself: every list, at N or the largest local default.
BENCH_GOALS  = $(patsubst bench-%,%,$(filter $(addprefix bench-,$(BENCHMARKS)),$(MAKECMDGOALS)))
DATA_FOR     = $(sort $(BENCH_GOALS) \
  $(if $(filter bench-all gpu-check,$(MAKECMDGOALS)),$(BENCHMARKS)) \
  $(if $(filter perf,$(MAKECMDGOALS)),$(or $(PERF_BENCHMARKS),$(BENCHMARKS))) \
  $(if $(filter sweep compare-profiles,$(MAKECMDGOALS)),$(BENCH)))
DATA_PROFILES = $(if $(filter compare-profiles,$(MAKECMDGOALS)),$(PROFILES),$(PROFILE))
DATA_ARGS    = $(if $(filter data,$(MAKECMDGOALS)),,\
  $(foreach p,$(DATA_PROFILES),--profile $(call q,$(p))) \
  $(foreach b,$(DATA_FOR),--benchmark $(call q,$(b))))

.PHONY: help setup lock models data $(addprefix bench-,$(BENCHMARKS)) bench-all perf sweep compare-profiles plan plan-check gpu-check report compare publish \
        images image-cpu $(addprefix image-,$(IMAGES)) push base-image image-tools test-images test test-servers lint doctor clean needs-bench

help: ## list targets and variables
	@echo "Benchmark kit for Apache Beam RunInference with PyTorch models"
	@echo
	@echo "Targets:"
	@grep -hE '^[a-zA-Z0-9_% -]+:.*## ' $(foreach f,$(MAKEFILE_LIST),$(call q,$(f))) | sed -E 's/:.*## /\t/' | \
	  awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  bench-<name>           run one benchmark; names: "$(call q,$(BENCHMARKS))
	@echo "  image-<name>           build one worker image with its family's models; names: "$(call q,$(IMAGES))
	@echo "                         (image-gpu: CUDA for the T4; image-cpu: both CPU images)"
	@echo
	@echo "Variables (make VAR=value):"
	@grep -hE '^[A-Z_]+ +\?=.*## ' $(foreach f,$(MAKEFILE_LIST),$(call q,$(f))) | sed -E 's/ +\?= *([^#]*)## /\t\1\t/' | \
	  awk -F'\t' '{printf "  %-19s %-13s %s\n", $$1, $$2, $$3}'

# --- set-up: venv with pinned installs ------------------------------------------------------
$(VENV)/.base: requirements/base.txt requirements/worker.txt requirements/torch-local.txt requirements/no-deps.txt
	@$(call q,$(PYTHON)) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; py, want = sys.argv[1:]; \
	  sys.exit(0 if v == want else py + " is Python " + v + ": the worker images use " + want + \
	  "; set PYTHON=python" + want)' $(call q,$(PYTHON)) $(call q,$(PY_MINOR))
	test -x $(PY) || $(call q,$(PYTHON)) -m venv $(call q,$(VENV))
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/torch-local.txt \
	  -r requirements/base.txt $(QUIET_PIP)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements/no-deps.txt $(QUIET_PIP)
	$(PY) -c "import apache_beam, torch, torchvision, transformers"
	touch $(call q,$@)

$(VENV)/.test: $(VENV)/.base requirements/test.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/test.txt $(QUIET_PIP)
	$(PY) -c "import pytest, bqemulator, duckdb"
	touch $(call q,$@)

setup: $(VENV)/.base ## create the venv with the pinned requirements

lock: ## re-resolve requirements/base.in into the pinned worker.txt, base.txt and torch-local.txt
	PYTHON=$(call q,$(PYTHON)) infra/lock-requirements.sh

models: setup ## write model state dicts (WEIGHTS=random|pretrained) and the bert vocab
	$(PY) -m pipelines.worker.models --weights $(call q,$(WEIGHTS)) --out models $(ALL_MODELS)

data: models ## generate every local dataset (images, scenes for object detection, sentences); a benchmark target generates only its own
	$(call explain) $(PY) -m pipelines.data --out data $(ITEMS_ARG) $(DATA_ARGS)

# --- benchmarks -------------------------------------------------------------------------------
# A local run generates its own input list (see DATA_FOR), or none when it reads an INPUT= list.
LOCAL_BENCH_NEEDS = $(if $(filter DirectRunner,$(RUNNER)),$(if $(INPUT),models,data),setup)
$(addprefix bench-,$(BENCHMARKS)): bench-%: $(LOCAL_BENCH_NEEDS)
	$(call explain,the run failed; its record is saved) $(PY) -m pipelines.run $(call q,$*) $(RUN_ARGS)

bench-all: $(if $(filter DirectRunner,$(RUNNER)),data,setup) ## every benchmark the hardware allows, the summary, the report
	$(call explain,a benchmark failed; every record is saved) $(PY) -m pipelines.bench_all $(RUN_ARGS)

perf: data ## Beam pipeline vs plain PyTorch loop for every CPU benchmark: throughput and efficiency
	$(call explain) $(PY) -m pipelines.perf --profile $(call q,$(PROFILE)) $(ITEMS_ARG) \
	  $(REPEATS_ARG) $(if $(LAYOUTS),--layouts $(call q,$(LAYOUTS))) \
	  $(foreach b,$(PERF_BENCHMARKS),$(call q,$(b)))

compare-profiles: $(if $(BENCH),data,needs-bench) ## BENCH=<name>: tuned then beam profile back to back, REPEATS times; median beam/tuned ratios
	$(call explain) $(PY) -m pipelines.compare_profiles $(call q,$(BENCH)) \
	  --results-dir $(call q,$(RESULTS)) $(ITEMS_ARG) $(REPEATS_ARG) \
	  $(if $(filter 1,$(IN_IMAGE)),--in-image)

plan: $(if $(BENCH),setup,needs-bench) ## BENCH=<name> [ITEMS= DEADLINE=s BUDGET=usd]: workers and machine type for a job, projected from local N=share runs
	$(call explain) $(PY) -m pipelines.capacity $(call q,$(BENCH)) \
	  --results-dir $(call q,$(RESULTS)) \
	  $(if $(ITEMS),--items $(call q,$(ITEMS))) $(if $(DEADLINE),--deadline-s $(call q,$(DEADLINE))) \
	  $(if $(BUDGET),--budget-usd $(call q,$(BUDGET)))

plan-check: $(if $(BENCH),models,needs-bench) ## BENCH=<name> N=<n>: project 2N items from runs at N and 4N, run 2N, print the error
	$(call explain) $(PY) -m pipelines.data --out data \
	  --items $(call q,$(shell echo $$((4 * $(or $(filter-out share,$(N)),1))))) \
	  --profile $(call q,$(PROFILE)) --benchmark $(call q,$(BENCH))
	$(call explain) $(PY) -m pipelines.projection_check $(call q,$(BENCH)) \
	  --results-dir $(call q,$(RESULTS)) \
	  --items $(call q,$(or $(N),$(error error: make plan-check needs N=<items>))) \
	  $(if $(LAYOUT),--layout $(call q,$(LAYOUT))) $(if $(filter 1,$(IN_IMAGE)),--in-image)

report: setup ## write results/report.html (plots, percentiles, cost, regressions) and regressions.json
	$(call explain) $(PY) -m pipelines.report --results-dir $(call q,$(RESULTS)) \
	  $(if $(filter 1,$(FAIL_ON_REGRESSION)),--fail-on-regression)

compare: setup ## compare two runs (A=<run> B=<run>; default: latest vs previous of the same benchmark)
	$(call explain) $(PY) -m pipelines.report.compare --results-dir $(call q,$(RESULTS)) \
	  $(if $(filter 1,$(CROSS_PROFILE)),--cross-profile) \
	  -- $(if $(A),$(call q,$(A))) $(if $(B),$(call q,$(B)))

publish: setup ## send unpublished run records to InfluxDB/BigQuery (RUN=<id> resends one)
	$(call explain,a run was not delivered; the attempt is on its record) $(PY) -m pipelines.publish \
	  --results-dir $(call q,$(RESULTS)) $(if $(RUN),--run $(call q,$(RUN)))

# --- worker images and Dataflow ----------------------------------------------------------------
# What `make images` leaves out, and so `make images push` too (a `make push` alone pushes all).
IMAGES_LEFT_OUT = $(if $(HF_TOKEN_MISSING),$(filter vllm-gpu,$(IMAGES)))
IMAGES_BUILT    = $(filter-out $(IMAGES_LEFT_OUT),$(IMAGES))
images: $(addprefix image-,$(IMAGES_BUILT)) ## build every worker image it can, one per benchmark family (image-<name>)
	$(if $(IMAGES_LEFT_OUT),@echo "images: left out vllm-gpu: pretrained Gemma needs $(HF_TOKEN_NEED)")

image-cpu: image-cpu-resnet image-cpu-bert ## build both CPU images (ResNet and BERT families)

$(addprefix image-,$(IMAGES)): image-%: ## build one worker image (CPU, or CUDA for the T4) with its family's models baked in
	$(call q,$(BUILDER)) build $(BUILD_FLAGS) -f $(call q,docker/Dockerfile.$(firstword $(subst -, ,$*))) -t $(call q,$(call image_ref,$*)) \
	  --build-arg $(call q,PYTHON_VERSION=$(PY_MINOR)) --build-arg $(call q,BEAM_VERSION=$(BEAM_VERSION)) \
	  --build-arg $(call q,TORCH_VERSION=$(TORCH_VERSION)) --build-arg $(call q,TORCHVISION_VERSION=$(TORCHVISION_VERSION)) \
	  --build-arg $(call q,MODELS=$(shell $(call q,$(PYTHON)) -m pipelines.matrix models $(call q,$*))) \
	  $(if $(and $(TORCH_FROM),$(filter gpu,$*)),--build-arg TORCH_CUDA_MAJOR=$(PYPI_CUDA_MAJOR)) \
	  $(if $(and $(HF_TOKEN_FILE),$(filter vllm-gpu,$*)),--secret $(call q,id=hf_token$(comma)src=$(HF_TOKEN_FILE))) \
	  --build-arg GIT_SHA=$(shell git rev-parse HEAD 2>/dev/null) .
	@echo built $(call q,$(call image_ref,$*))

push: ## push every image to REGISTRY and record tag + digest (build/image-*.digest): launches use image@sha256
	@test -n $(call q,$(REGISTRY)) || { echo "error: push needs REGISTRY (in .env or REGISTRY=...)" >&2; exit 2; }
	mkdir -p build
	for variant in $(foreach i,$(if $(filter images,$(MAKECMDGOALS)),$(IMAGES_BUILT),$(IMAGES)),\
	  $(call q,$(i))); do \
	  ref=$(call q,$(REGISTRY))/beam-bench-$$variant:$(call q,$(image_tag)); \
	  if [ $(call q,$(BUILDER)) = docker ]; then \
	    docker push "$$ref" && digest=$$(docker inspect --format '{{index .RepoDigests 0}}' "$$ref"); \
	  else \
	    $(call q,$(BUILDER)) push --digestfile "build/image-$$variant.pushed" $(PUSH_FLAGS) "$$ref" && digest=$$(cat "build/image-$$variant.pushed"); \
	  fi || exit 1; \
	  $(PY) -m pipelines.dataflow record-digest "build/image-$$variant.digest" "$$ref" "$$digest" || exit 1; \
	done

base-image: ## build the local stand-in for Beam's SDK base image from Debian (root, buildah, debootstrap)
	BEAM_VERSION=$(call q,$(BEAM_VERSION)) PY_MINOR=$(call q,$(PY_MINOR)) CA_BUNDLE=$(call q,$(CA_BUNDLE)) \
	  CONTAINERS_STORAGE_CONF=$(call q,$(or $(CONTAINERS_STORAGE_CONF),$(CURDIR)/infra/containers/storage.conf)) \
	  infra/base-image.sh $(STANDIN_IMAGE) $(if $(filter 1,$(FORCE)),--force)

sweep: $(if $(BENCH),data,needs-bench) ## one benchmark over batch sizes x worker layouts (BENCH=, BATCH_SIZES=, LAYOUTS=, OPTIMIZATIONS=, N=, REPEATS=)
	$(call explain,a point failed; its record is saved) $(PY) -m pipelines.sweep $(call q,$(BENCH)) \
	  --results-dir $(call q,$(RESULTS)) $(ITEMS_ARG) \
	  $(if $(BATCH_SIZES),--batch-sizes $(call q,$(BATCH_SIZES))) $(if $(LAYOUTS),--layouts $(call q,$(LAYOUTS))) \
	  $(if $(BATCHINGS),--batchings $(call q,$(BATCHINGS))) $(REPEATS_ARG) \
	  $(if $(OPTIMIZATIONS),--optimizations $(call q,$(OPTIMIZATIONS))) $(if $(filter 1,$(IN_IMAGE)),--in-image)

needs-bench:
	@echo "error: make "$(call q,$(MAKECMDGOALS))" needs BENCH=<name>; names: "$(call q,$(BENCHMARKS)) >&2; exit 2

gpu-check: data ## on a GPU machine: NVML reads, resnet152-gpu on CUDA, efficiency vs a plain CUDA loop
	$(PY) -m pipelines.gpu_check

# --- quality ----------------------------------------------------------------------------------
# The image tests (make test-images) build, push and run multi-GB images (minutes, root): their
# own target, which .ci/run runs after `make test`; the one file `make test` leaves out.
# It installs the servers' Debian packages first where it can (root, or sudo without a password);
# elsewhere their tests are skipped and the last line names them and `make test-servers`.
test: $(VENV)/.test ## run the test suite (installs and starts the servers it needs; a last line names any skip)
	infra/apt-install.sh --if-possible 'test servers' $(TEST_SERVER_PACKAGES)
	$(PY) -m pytest -p no:cacheprovider tests --ignore=tests/test_image_build.py

# The Debian packages the tests start: InfluxDB 1.x, VictoriaMetrics, headless Chromium (and its
# fonts) for the report render check. The BigQuery emulator comes from requirements/test.txt.
# infra/apt-install.sh installs those of them not installed yet (sudo where not root).
TEST_SERVER_PACKAGES := influxdb victoria-metrics chromium fonts-liberation
test-servers: ## install the Debian packages the tests need (InfluxDB, VictoriaMetrics, Chromium, image tools)
	infra/apt-install.sh 'test servers' $(TEST_SERVER_PACKAGES) $(IMAGE_TOOL_PACKAGES)

# The Debian packages that build, run and push worker images without a Docker daemon, and the
# loopback registry make test-images pushes to.
IMAGE_TOOL_PACKAGES := buildah podman skopeo runc debootstrap docker-registry
image-tools: ## install the Debian packages for daemonless image builds (buildah, podman, registry)
	infra/apt-install.sh 'image tools' $(IMAGE_TOOL_PACKAGES)

test-images: $(VENV)/.test ## build the CPU ResNet and GPU images from the stand-in base, push to a loopback registry, run a benchmark in the image (slow)
	$(PY) -m pytest -p no:cacheprovider tests/test_image_build.py

lint: $(VENV)/.test ## ruff on the code, hadolint on the Dockerfiles
	$(call q,$(VENV)/bin/ruff) check pipelines tests
	$(call q,$(VENV)/bin/hadolint) docker/Dockerfile.cpu docker/Dockerfile.gpu docker/Dockerfile.vllm

doctor: ## one screen: venv, models, data, GPU, what can run here, publishing and Dataflow settings
	@$(PY) -m pipelines.doctor

clean: ## remove generated data, models, results and the venv
	rm -rf -- data models $(call q,$(RESULTS)) $(call q,$(VENV)) build
