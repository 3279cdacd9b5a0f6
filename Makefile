# perfkit developer entry points. Everything installs itself into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help demo test lint typecheck pytest bench loadtest monitoring clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) --editable ".[app]"
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) --editable ".[dev]"
	@touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed  ## seed the SQLite demo database if needed and serve the example API on :8000
	PYTHONPATH=examples $(BIN)/python -m bill_api

test: lint typecheck pytest  ## ruff, mypy (strict) and the whole pytest suite

lint: $(VENV)/.dev-installed  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed  ## mypy --strict on src/
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed  ## the test suite (PostgreSQL/Redis tests skip unless reachable or required)
	$(BIN)/python -m pytest

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(PIP) --editable ".[bench]"
	@touch $@ $(VENV)/.dev-installed $(VENV)/.demo-installed

bench: $(VENV)/.bench-installed  ## peer benchmarks; results go to docs/benchmarks.md by hand
	PYTHONPATH=examples $(BIN)/python benchmarks/run.py

loadtest: $(VENV)/.dev-installed  ## the example API under open-model load, judged by budgets.json (reports in var/load)
	PYTHONPATH=examples $(BIN)/python -m bill_api.loadtest

clean:  ## remove the virtualenv, caches and the demo database
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis

monitoring: $(VENV)/.dev-installed  ## Prometheus alerts and a Grafana dashboard for the example API, from budgets.json
	$(BIN)/perfkit-budgets rules budgets.json --selector 'job="bill-api"' -o examples/bill_api/monitoring/alerts.yml
	$(BIN)/perfkit-budgets dashboard budgets.json --selector 'job="bill-api"' --title "perfkit bill/vote API" \
		-o examples/bill_api/monitoring/dashboard.json
