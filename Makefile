# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.lock | sha256sum | cut -c1-12)

.PHONY: help venv host-deps test unit runtime e2e node lint crds lock demo cluster images binaries bench bench-operator bench-plot soak clean

help:
	@echo "make demo     run the operator on a local control plane (or \$$KUBECONFIG) with the examples"
	@echo "make test     lint, then every test (unit, e2e on a local control plane)"
	@echo "make unit     unit tests: models, render, chart, Dockerfiles (no cluster; ~3 min)"
	@echo "make runtime  agent runtime tests (a real uvicorn process, a local model server, daprd)"
	@echo "make e2e      end-to-end tests on kwok's fake nodes"
	@echo "make node     end-to-end tests on the real node (our images in real pods; Linux, root)"
	@echo "make images   build (or reuse) the agent and operator images; prints times and sizes"
	@echo "make bench    runtime benchmark (JSON): latency vs a bare FastAPI ceiling, cold start, RSS"
	@echo "make bench-operator N='100 1000'  the operator at scale: JSON per N in bench/results, then the table"
	@echo "make bench-plot  bench/results/operator-scale.png from those results"
	@echo "make soak     100 clients streaming through an agent's Service on the real node for 5 min (JSON)"
	@echo "make crds     regenerate crds/ from the pydantic models"
	@echo "make cluster  start a local cluster and keep it up (prints export KUBECONFIG=...)"
	@echo "make host-deps  the Debian packages the real node needs (as root; a no-op when present)"
	@echo "make lint     ruff and mypy"
	@echo "make lock     re-resolve requirements/dev.lock"

# A virtualenv with pinned dependencies, remade when pyproject.toml or the lock changes; the
# dependencies themselves live in a shared venv in the user cache, made once per lock
# (hack/venv.sh), so a fresh clone gets its .venv in seconds.
$(STAMP): pyproject.toml requirements/dev.lock hack/venv.sh
	PYTHON=$(PYTHON) bash hack/venv.sh
	@touch $@

venv: $(STAMP)

# The real node's host tools, from Debian's packages. Installed only as root on Debian, and only
# what is missing (a warm machine never runs apt-get); elsewhere the node suite says what lacks.
HOST_PACKAGES := docker.io containerd runc debootstrap nftables iptables iproute2 conntrack \
	containernetworking-plugins util-linux mount gcc libc6-dev redis-server
# policy-rc.d (exit 101) while installing: a package's service (redis-server's) must not start
# on the host; the local cluster runs its own, bound to the node's address.
host-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages for the real node:" $$missing; \
	    own_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then own_policy=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	    rc=$$?; [ -n "$$own_policy" ] && rm -f /usr/sbin/policy-rc.d; [ $$rc = 0 ] || exit $$rc; \
	  fi; \
	else echo "host-deps: not root on Debian; the real node needs: $(HOST_PACKAGES)"; fi

# Every suite: the real-node suite in a pytest process of its own beside the others (hack/test.sh).
test: lint host-deps
	PY=$(PY) hack/test.sh

unit: venv
	$(PY) -m pytest tests/unit

runtime: venv
	$(PY) -m pytest tests/runtime

e2e: venv
	$(PY) -m pytest tests/e2e

node: venv host-deps
	$(PY) -m pytest tests/node

# mypy's cache lives in the user cache, shared by every checkout: a fresh clone's strict check then
# takes seconds, not a minute and a half (mypy trusts a cached module only if its hash matches).
CACHE_ROOT := $(or $(AIAGENT_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/aiagent-operator)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPY_CACHE_DIR=$(CACHE_ROOT)/mypy $(VENV)/bin/mypy

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
	localcluster/build.sh

images: venv host-deps
	$(PY) -m localcluster images

cluster: venv host-deps
	$(PY) -m localcluster up --dapr

demo: venv host-deps
	$(PY) -m hack.demo

bench: venv
	$(PY) -m bench.runtime

# Load and soak on a real pod: 100 streaming clients for 300 s, RSS read from the host; the JSON
# goes to bench/results/soak-<date>.json (`python -m bench.soak --help` for the knobs).
soak: venv host-deps
	$(PY) -m bench.soak --out bench/results

# The operator at scale on the local control plane (kwok nodes): N AIAgents, ours vs a raw client.
N ?= 100 1000
bench-operator: venv
	$(PY) -m bench.operator --agents $(N) --out bench/results

# The README's plot from those results; matplotlib in a venv of its own (no product dependency).
PLOT_VENV := $(CACHE_ROOT)/venv/plot-matplotlib-3.11.2
bench-plot:
	test -x $(PLOT_VENV)/bin/python || { python3 -m venv $(PLOT_VENV) && \
	  $(PLOT_VENV)/bin/pip install --quiet matplotlib==3.11.2; }
	$(PLOT_VENV)/bin/python -m bench.plot_operator  # -m: bench/operator.py must not shadow `operator`

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
