# Named gates: make run | test | lint | fmt | bench | soak | clean | distclean.
# Works from a fresh clone with only python3.11 (or python3) and make installed.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv run test lint fmt bench soak clean distclean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when the packaging changes or the venv is new. The folders install as
# baton.domain, baton.projections and baton.adapters (setup.py maps them); the editable install's
# finder maps those three names, and their subpackages are found as they appear.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

run: venv
	$(BIN)/baton serve

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# mypy cannot follow the editable install's import hook: it checks the package through a
	@# tree of links named as it installs (.venv/typecheck/baton/domain -> domain, ...).
	@mkdir -p $(VENV)/typecheck/baton
	@for d in domain projections adapters; do ln -sfn ../../../$$d $(VENV)/typecheck/baton/$$d; done
	MYPYPATH=$(VENV)/typecheck $(BIN)/mypy -p baton.domain -p baton.projections -p baton.adapters

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# BENCH_ARGS picks benchmarks and --quick, e.g. make bench BENCH_ARGS="commands plansize".
bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: venv
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -q -p no:cacheprovider tests/property tests/faults $(PYTEST_ARGS)
	$(BIN)/python -m bench retention

# Build artefacts and caches; keeps the venv and the data in var/.
clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the venv.
distclean: clean
	rm -rf $(VENV)
