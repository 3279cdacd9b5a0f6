# perfkit developer entry points. Everything installs itself: uv into .uv, the rest into .venv,
# at exactly the versions uv.lock names (so a fresh clone tests what main was tested with).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := .uv/bin/uv

# uv: the interpreter make was given (never one of its own), the project's venv, quiet logs.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_NO_PROGRESS := 1

.DEFAULT_GOAL := help
# The targets share .venv (and .venv-newest): one at a time, even under make -j.
.NOTPARALLEL:
.PHONY: help demo test lint typecheck pytest bench cluster loadtest monitoring lock upgrade \
	test-lowest test-newest check-newest clean dev-env

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# uv itself, hash-checked: the one install that cannot come from uv.lock. To move it, set the
# version in pyproject.toml's [tool.uv] required-version and in requirements/uv.txt, made by
# echo uv==VERSION | .uv/bin/uv pip compile --universal --generate-hashes - -o requirements/uv.txt
$(UV): requirements/uv.txt
	rm -rf .uv
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--require-hashes -r requirements/uv.txt

# $(call sync,OPTIONS): make .venv what uv.lock says; a lock behind pyproject.toml is an error
# that names the make target which fixes it (uv's own message names a uv command).
define sync
	@echo "$(UV) sync --locked $(1)"
	@$(UV) sync --locked --quiet $(1) 2>.uv/sync.err || { \
		cat .uv/sync.err >&2; \
		if grep -q "needs to be updated" .uv/sync.err; then \
			echo "make: uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; \
		fi; \
		exit 1; }
endef

dev-env: | $(UV)
	$(call sync,--all-extras)

demo: | $(UV)  ## seed the SQLite demo database if needed and serve the example API on :8000
	$(call sync,--extra app --no-dev --inexact)
	PYTHONPATH=examples $(BIN)/python -m bill_api

test: lint typecheck pytest  ## ruff, mypy (strict) and the whole pytest suite, on the locked versions

lint: dev-env  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev-env  ## mypy --strict on src/
	$(BIN)/mypy

pytest: dev-env  ## the test suite (PostgreSQL/Redis tests skip unless reachable or required)
	$(BIN)/python -m pytest

bench: | $(UV)  ## peer benchmarks; results go to docs/benchmarks.md by hand
	$(call sync,--all-extras --group bench)
	PYTHONPATH=examples $(BIN)/python benchmarks/run.py

cluster: | $(UV)  ## 2 instances x 2 workers of the example API behind haproxy on :8080 (PostgreSQL, Redis, RabbitMQ)
	$(call sync,--all-extras)
	$(BIN)/python deploy/cluster.py $(CLUSTER_ARGS)

loadtest: dev-env  ## the example API under open-model load, judged by budgets.json (reports in var/load)
	PYTHONPATH=examples $(BIN)/python -m bill_api.loadtest

monitoring: dev-env  ## Prometheus alerts and a Grafana dashboard for the example API, from budgets.json
	$(BIN)/perfkit-budgets rules budgets.json --selector 'job="bill-api"' -o examples/bill_api/monitoring/alerts.yml
	$(BIN)/perfkit-budgets dashboard budgets.json --selector 'job="bill-api"' --title "perfkit bill/vote API" \
		-o examples/bill_api/monitoring/dashboard.json

lock: | $(UV)  ## bring uv.lock in line with pyproject.toml, moving no version it need not move
	$(UV) lock

upgrade: | $(UV)  ## move uv.lock to the newest releases pyproject.toml allows (say so in CHANGELOG.md)
	$(UV) lock --upgrade

# $(call resolve,VENV,UV OPTIONS): a venv of its own holding pyproject.toml's ranges resolved
# another way (not uv.lock); what it resolved is left in VENV/requirements.txt.
define resolve
	rm -rf $(1)
	$(UV) venv --quiet $(1)
	$(UV) pip compile --quiet --no-header pyproject.toml --all-extras --group dev $(2) \
		-o $(1)/requirements.txt
	$(UV) pip sync --quiet --python $(1) $(1)/requirements.txt
	$(UV) pip install --quiet --python $(1) --no-deps --editable .
endef

test-lowest: | $(UV)  ## the pytest suite on the lowest versions the ranges allow (.venv-lowest)
	$(call resolve,.venv-lowest,--resolution lowest-direct)
	.venv-lowest/bin/python -m pytest

test-newest: | $(UV)  ## mypy and the pytest suite on the newest releases (.venv-newest)
	$(call resolve,.venv-newest,--refresh)
	.venv-newest/bin/mypy
	.venv-newest/bin/python -m pytest

check-newest: | $(UV)  ## mypy and an import of every module on the newest releases (CI's early warning)
	$(call resolve,.venv-newest,--refresh)
	.venv-newest/bin/mypy
	.venv-newest/bin/python -W error .ci/import_smoke.py

clean:  ## remove the virtualenvs, caches and the demo database
	rm -rf $(VENV) .venv-lowest .venv-newest .uv var .mypy_cache .ruff_cache .pytest_cache .hypothesis
