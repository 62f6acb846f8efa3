# Named gates: make run | test | lint | fmt | bench | soak | clean | distclean.
# Works from a fresh clone with only python3.11 (or python3) and make installed.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv run test lint fmt bench soak clean distclean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changes, the venv is new, or a top-level package appears
# (setuptools' editable finder maps the top-level packages that exist at install time).
$(STAMP): pyproject.toml $(wildcard domain/__init__.py projections/__init__.py adapters/__init__.py) | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

run: venv
	$(BIN)/baton serve

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain projections adapters

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python -m bench

soak: venv
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -q -p no:cacheprovider tests/property tests/faults $(PYTEST_ARGS)

# Build artefacts and caches; keeps the venv and the data in var/.
clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the venv.
distclean: clean
	rm -rf $(VENV)
