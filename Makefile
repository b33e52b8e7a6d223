# The two commands a newcomer needs:  `make run`  and  `make test`.
# `make install` sets up .venv only; then `. .venv/bin/activate` puts `margin-monitor` on the PATH.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers: the suite mostly waits (simulated exchanges, receivers, timers), so more workers
# than cores win on 2 vCPU (docs/testing.md has the measurements). `make test WORKERS=0` runs in one
# process. The test targets write bytecode even where PYTHONDONTWRITEBYTECODE is set: every worker and
# each of the ~60 CLI subprocesses would otherwise recompile monitor/ and re-rewrite the test modules.
WORKERS ?= 6
PYTEST  := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

.PHONY: install run check status test-alert test quick lint typecheck unit container bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## set up .venv (margin-monitor and the test tools, editable); `. .venv/bin/activate` then puts it on the PATH
install: $(STAMP)
	@echo "margin-monitor is installed in $(VENV)/bin. To type 'margin-monitor' bare in this shell:"
	@echo "    . $(VENV)/bin/activate"
	@echo "(for every shell, install it as a tool instead: pipx install .)"

## run the daemon on config.yaml (the embedded simulator by default: no keys, no network)
run: $(STAMP)
	$(BIN)/margin-monitor run -c config.yaml

## the one-shot commands on config.yaml (the daemon may be running: status asks it)
check: $(STAMP)
	$(BIN)/margin-monitor check -c config.yaml

status: $(STAMP)
	$(BIN)/margin-monitor status -c config.yaml

test-alert: $(STAMP)
	$(BIN)/margin-monitor test-alert -c config.yaml

## the whole test suite: ruff, import-linter, mypy --strict, pytest (the container smoke test runs in `make container`)
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check monitor tests bench
	$(BIN)/ruff format --check monitor tests bench
	$(BIN)/lint-imports --no-cache   # the layers of monitor/ (contracts in pyproject.toml)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(PYTEST) -n $(WORKERS) -m "not container"

## the inner loop: pytest without the tests marked slow (end-to-end runs of many seconds) nor the container
quick: $(STAMP)
	$(PYTEST) -n $(WORKERS) -m "not slow and not container"

## the container smoke test alone (needs root, buildah and debootstrap; see deploy/docker/README.md)
container: $(STAMP)
	$(BIN)/pytest -m container

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
