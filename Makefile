# Each target documents itself: `make help`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/pixelbatch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/pixelbatch ## Create .venv and install pixelbatch with its dev tools

demo: install ## Process the bundled example catalog, offline
	$(BIN)/pixelbatch demo

run: install ## Serve the API with embedded workers on http://127.0.0.1:8000
	$(BIN)/pixelbatch serve

test: install ## Run the whole test suite
	$(BIN)/pytest

lint: install ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: install ## Apply ruff formatting and fixes
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) pixelbatch-data .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install demo run test lint format clean
