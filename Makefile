# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.lock | sha256sum | cut -c1-12)

.PHONY: help venv test unit runtime e2e lint crds lock demo cluster binaries bench clean

help:
	@echo "make demo     run the operator on a local control plane (or \$$KUBECONFIG) with the examples"
	@echo "make test     lint, then every test (unit, e2e on a local control plane)"
	@echo "make unit     unit tests: models, render, chart, Dockerfiles (no cluster; ~3 min)"
	@echo "make runtime  agent runtime tests (a real uvicorn process, a local model server, daprd)"
	@echo "make e2e      end-to-end tests only"
	@echo "make bench    runtime benchmark (JSON): latency vs a bare FastAPI ceiling, cold start, RSS"
	@echo "make crds     regenerate crds/ from the pydantic models"
	@echo "make cluster  start a local control plane and keep it up (prints export KUBECONFIG=...)"
	@echo "make lint     ruff and mypy"
	@echo "make lock     re-resolve requirements/dev.lock"

# A virtualenv with pinned dependencies, rebuilt when pyproject.toml or the lock changes.
$(STAMP): pyproject.toml requirements/dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/dev.lock -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# One pytest run over every suite, so its closing line counts every test.
test: lint
	$(PY) -m pytest tests/unit tests/runtime tests/e2e

unit: venv
	$(PY) -m pytest tests/unit

runtime: venv
	$(PY) -m pytest tests/runtime

e2e: venv
	$(PY) -m pytest tests/e2e

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

crds: venv
	$(PY) -m aiagent_operator.crd crds README.md
	cp crds/*.yaml charts/aiagent-operator/crds/  # the chart ships the same files

# Re-resolve every pin at once (operator, runtime, frameworks, test tools) with a current pip,
# whose resolver backtracks sensibly; see the header of requirements/dev.lock for the limits found.
lock:
	rm -rf /tmp/aiagent-lock && $(PYTHON) -m venv /tmp/aiagent-lock
	/tmp/aiagent-lock/bin/pip install --quiet --upgrade pip
	/tmp/aiagent-lock/bin/pip install --quiet '.[dev]' 'pydantic<2.13'
	{ sed -n '/^#/p' requirements/dev.lock; \
	  /tmp/aiagent-lock/bin/pip freeze --exclude aiagent-operator; } > requirements/dev.lock.new
	mv requirements/dev.lock.new requirements/dev.lock

binaries:
	tests/controlplane/build.sh

cluster: venv
	$(PY) -m tests.controlplane up

demo: venv
	$(PY) -m hack.demo

bench: venv
	$(PY) -m bench.runtime

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
