# The two commands a newcomer needs:  `make demo` (the main job) and `make test` (the tests).
# Each bootstraps what it needs (Python venv from the lock, Azurite from npm, AIRFLOW_HOME) and is
# quick on the second run.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AIRFLOW_HOME := $(CURDIR)/.airflow
# Environment for every airflow command: the project-local home and the local connections.
AIRFLOW_ENV = eval "$$($(BIN)/python -m devtools.services env)" && export PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: help demo test docs e2e-distributed bench bench-postgres bench-smoke services stop status airflow bootstrap venv node airflow-home lock clean

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

demo: bootstrap  ## The main job, end to end against the local services
	@$(BIN)/python -m devtools.demo

test: venv node browser  ## The whole test suite (lint, types, compose schema, unit, integration, browser); PYTEST_ARGS=... to select
	@$(BIN)/pytest -n 2 --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  if [ -n "$(PYTEST_ARGS)" ]; then echo "make test: no test matched PYTEST_ARGS='$(PYTEST_ARGS)'"; rc=0; \
	  else echo "make test: pytest collected no tests at all" >&2; rc=1; fi; \
	fi; exit $$rc

docs: venv  ## The documentation (docs/) as a site on http://127.0.0.1:8000, rebuilt on every change
	@$(BIN)/mkdocs serve -a 127.0.0.1:8000

e2e-distributed: venv node  ## docker-compose.yaml's topology as local processes (PostgreSQL, Redis, Celery), end to end
	@$(BIN)/python -m devtools.distributed

# Airflow's metadata database for `make bench`: sqlite, postgresql, or both (2, 3, 6, 7, 8 on each in turn: 30-45 min).
BENCH_DATABASE ?= sqlite

bench: venv node  ## Benchmarks vs the baselines users would otherwise run, Airflow on SQLite (about 21 min): table + test-artifacts/bench.json
	@$(BIN)/python -m devtools.bench --database $(BENCH_DATABASE)

bench-postgres: venv node  ## The benchmarks that run on Airflow (2, 3, 6, 7, 8), on PostgreSQL (15-26 min): test-artifacts/bench-postgres.json
	@$(BIN)/python -m devtools.bench --database postgresql --airflow-only --out test-artifacts/bench-postgres.json

bench-smoke: venv node  ## The quick benchmark subset (also in make test); fails when a ratio is past its target
	@$(BIN)/python -m devtools.bench --smoke

services: bootstrap  ## Start Azurite (and the emulator) in the background on 127.0.0.1
	@$(BIN)/python -m devtools.services start

stop:  ## Stop the background services
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m devtools.services stop; fi

status:  ## Show which background services run
	@$(BIN)/python -m devtools.services status

airflow: services  ## Airflow's components on PostgreSQL, UI on 127.0.0.1:8080, connections pre-set (Ctrl-C stops it)
	@$(BIN)/python -m devtools.standalone $(AIRFLOW_ARGS)

bootstrap: venv node airflow-home

venv: $(VENV)/.installed
node: node_modules/.installed

# The browser tests drive headless Chromium through its chromedriver, both from Debian's packages
# (never a browser download). Checked on every run: cheap, and right even if they were removed.
.PHONY: browser
browser:  ## Chromium and chromedriver for the browser tests (apt-get, as root)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: the browser tests need Chromium and its driver: sudo apt-get install chromium chromium-driver (or run make as root)" >&2; exit 1; \
	  fi; \
	  echo "setup: Chromium and chromedriver from Debian's packages (apt-get, about a minute)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
	    || { echo "error: apt-get could not install chromium and chromium-driver" >&2; exit 1; }; \
	}
airflow-home: $(AIRFLOW_HOME)/.migrated

$(VENV)/.installed: requirements.txt emulator/requirements.txt requirements-dev.txt plugins/pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: '$(PYTHON)' not found: install Python 3.11 or newer with venv (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: $$($(PYTHON) --version 2>&1) is too old: install Python 3.11 or newer (or run make PYTHON=python3.12 ...)" >&2; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "error: Python's venv module is missing: apt-get install python3-venv" >&2; exit 1; }
	@echo "setup: Python environment in $(VENV) from the lock (first run: about a minute)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "$$(grep -E '^uv==' requirements-dev.txt)" 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/uv pip sync -q --python $(BIN)/python --compile-bytecode requirements.txt emulator/requirements.txt requirements-dev.txt
	@# Our package as an (editable) Airflow provider, so its connection types show in the UI. Its
	@# dependencies (plugins/pyproject.toml) come from the lock above, hence --no-deps: no re-resolution.
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e plugins
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "error: Node.js 20+ and npm not found: install them (Debian/Ubuntu: apt-get install nodejs npm)" >&2; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' || { echo "error: Node.js $$(node --version) is too old: install Node.js 20 or newer" >&2; exit 1; }
	@echo "setup: Azurite into node_modules from package-lock.json"
	@npm ci --no-audit --no-fund --silent
	@touch $@

$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	@echo "setup: Airflow metadata database in .airflow/"
	@mkdir -p $(AIRFLOW_HOME)/logs
	@$(AIRFLOW_ENV) && airflow db migrate > $(AIRFLOW_HOME)/logs/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/logs/db-migrate.log; exit 1; }
	@touch $@

lock:  ## Re-resolve requirements.txt / emulator/requirements.txt / requirements-dev.txt from the .in files
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11 --no-header -q
	$(BIN)/uv pip compile emulator/requirements.in -o emulator/requirements.txt --python-version 3.11 --no-header -q
	$(BIN)/uv pip compile requirements-dev.in -o requirements-dev.txt --python-version 3.11 --no-header -q

clean: stop  ## Remove everything the bootstrap created
	rm -rf $(VENV) node_modules $(AIRFLOW_HOME) .mypy_cache .ruff_cache test-artifacts
