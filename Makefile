# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the project, migrates the embedded sandbox tenant
#   make test   also installs the test bed (Dovecot, OpenSSH; root + apt), then runs the suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test faults lint typecheck check testbed-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scalix-migrate demo

testbed-deps:
	bash scripts/install-testbed-deps.sh

test: $(STAMP) testbed-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault suite alone (also part of `make test`): proxies, refusals, hostile input, secrets.
faults: $(STAMP) testbed-deps
	$(BIN)/python -m pytest -m faults tests/faults tests/flows/test_flow_faults.py \
	  tests/flows/test_flow_secrets.py tests/unit/test_properties.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy bench  # the benchmarks are scripts, not a package: checked on their own

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
