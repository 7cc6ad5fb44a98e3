# Each target documents itself: `make help`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COMPOSE_VENV ?= .venv-compose
MODE ?= embedded
# pytest-xdist workers for `make test`. Most end-to-end tests wait on servers, workers and
# timeouts rather than compute, so more workers than cores pays; each worker has its own
# databases (tests/conftest.py). --dist loadgroup keeps a module's shared fixtures on one worker.
TEST_WORKERS ?= 4
PYTEST_XDIST = -n $(TEST_WORKERS) --dist loadgroup

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/pixelbatch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,deploy-tools]'
	@touch $@

# docker-compose 1.29.2 validates docker-compose.yml. Own venv: it pins PyYAML<6, whose sdist
# only builds with Cython<3; it imports distutils, so Python <= 3.11.
$(COMPOSE_VENV)/bin/docker-compose:
	$(PY) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet "cython<3" setuptools wheel
	$(COMPOSE_VENV)/bin/pip install --quiet --no-build-isolation "pyyaml==5.4.1"
	$(COMPOSE_VENV)/bin/pip install --quiet "docker-compose==1.29.2"
	@touch $@

install: $(BIN)/pixelbatch ## Create .venv and install pixelbatch with its dev tools

deploy-tools: install $(COMPOSE_VENV)/bin/docker-compose ## Validators for the deploy files

demo: install ## Process the bundled example catalog, offline
	$(BIN)/pixelbatch demo

run: install ## Serve the web UI and API with embedded workers on http://127.0.0.1:8000
	$(BIN)/pixelbatch serve

system-packages: ## apt-install what the tests drive for real (chromium, prometheus, cc + libjpeg) when missing
	bash deploy/dev/system-packages.sh

test: install deploy-tools system-packages ## Run the whole test suite, in parallel (TEST_WORKERS=4)
	$(BIN)/pytest $(PYTEST_XDIST)

test-fast: install ## In-process tests only (not e2e, not slow), in parallel: under a minute
	$(BIN)/pytest -m "not e2e and not slow" -n auto --dist loadgroup

bench: install ## Benchmark against the codec floor and a naive tool (apt-installs photos once)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run

bench-quick: install ## Smoke-size benchmark, a couple of minutes
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run --quick

profile: install ## py-spy profile of one mode while a batch runs: make profile MODE=embedded
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.profile $(MODE)

lint: install ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

hooks: install ## Install the git pre-commit hook: ruff and mypy on every commit
	$(BIN)/pre-commit install

format: install ## Apply ruff formatting and fixes
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) $(COMPOSE_VENV) pixelbatch-data .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install deploy-tools system-packages demo run test test-fast bench bench-quick profile lint hooks format clean
