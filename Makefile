# The one entry point. `make serve` and `make test` work on a fresh machine:
# each creates .venv and installs the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: serve test lint format bench clean install openapi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/syndicate serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check syndicate feeds storage tests
	$(BIN)/ruff format --check syndicate feeds storage tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix syndicate feeds storage tests
	$(BIN)/ruff format syndicate feeds storage tests

openapi: $(STAMP)
	$(BIN)/syndicate openapi > docs/openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
