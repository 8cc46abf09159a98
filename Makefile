# modelyard — one command runs the demo (`make run`), one passes the tests (`make test`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PROTOC := .venv-protoc/bin/python
SOURCES := services gateway protos/generate.py tests bench

.PHONY: setup run test unit integration lint format typecheck proto proto-check bench clean

setup: $(STAMP)

# Re-runs only when the pinned ranges change.
$(STAMP): pyproject.toml protos/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	test -x $(PROTOC) || $(PYTHON) -m venv .venv-protoc
	$(PROTOC) -m pip install --quiet -r protos/requirements.txt
	touch $(STAMP)

run: setup
	$(PY) -m modelyard.gateway.demo --out demo-output

test: setup lint typecheck proto-check
	$(PY) -m pytest -q

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

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

bench: setup
	$(PY) -m bench.runtime

clean:
	rm -rf $(VENV) .venv-protoc demo-output .pytest_cache .ruff_cache .mypy_cache
