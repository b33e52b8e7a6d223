# The two commands a newcomer needs:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit container bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run the daemon on config.yaml (the embedded simulator by default: no keys, no network)
run: $(STAMP)
	$(BIN)/margin-monitor run -c config.yaml

## the whole test suite: ruff, mypy --strict, pytest (the container smoke test runs in `make container`)
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check monitor tests bench
	$(BIN)/ruff format --check monitor tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not container"

## the container smoke test alone (needs root, buildah and debootstrap; see deploy/docker/README.md)
container: $(STAMP)
	$(BIN)/pytest -m container

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
