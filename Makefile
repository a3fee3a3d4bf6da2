# absch-monitor developer commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install sysdeps up migrate test test-unit test-integration test-e2e lint fmt typecheck schemas clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

up: $(STAMP) ## run everything locally: broker, SMTP sink, four services, demo data
	$(PY) -m tools.devstack

migrate: $(STAMP) ## bring every service's database (settings from the environment) to head
	$(PY) -m tools.migrate --all

sysdeps: ## install the Debian tools some tests use (when root and missing)
	@scripts/sysdeps.sh

test: $(STAMP) sysdeps ## lint, type-check and run every test layer
	$(PY) -m tools.check

test-unit: $(STAMP) ## unit and contract tests only (no broker)
	$(PY) -m pytest tests/unit tests/contract -q

test-integration: $(STAMP) ## integration tests (embedded broker, real SMTP)
	$(PY) -m pytest tests/integration -q

test-e2e: $(STAMP) ## end-to-end tests: HTTP in, e-mail out
	$(PY) -m pytest tests/e2e -q

lint: $(STAMP) ## ruff lint and format check
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

fmt: $(STAMP) ## format and auto-fix
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

typecheck: $(STAMP) ## mypy --strict
	$(PY) -m mypy shared services tools tests bench

schemas: $(STAMP) ## regenerate event JSON Schemas and docs/events.md
	$(PY) -m shared.events.schemas

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

bench: $(STAMP) ## run the benchmarks and print the tables
	$(PY) -m bench
.PHONY: bench
