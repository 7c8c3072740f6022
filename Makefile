# spacesecrets -- everything a fresh clone needs is installed by these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_RED := clients/node-red
NODE_STAMP := $(NODE_RED)/node_modules/.installed
CONTROLPLANE = $(shell bash hack/controlplane/build.sh)
PYTEST_ARGS ?=

.PHONY: all venv controlplane node lint test unit integration e2e crds run demo bench soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $@

venv: $(STAMP)

controlplane:
	bash hack/controlplane/build.sh

$(NODE_STAMP): $(NODE_RED)/package-lock.json
	cd $(NODE_RED) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node: $(NODE_STAMP)

lint: venv
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: venv
	$(VENV)/bin/spacesecrets crds --out crds

test: venv controlplane node lint
	cd $(NODE_RED) && npm test
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

run: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(VENV)/bin/spacesecrets dev

demo: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(VENV)/bin/spacesecrets dev --demo

bench: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/bench -s $(PYTEST_ARGS)

# The long reliability campaign: 50 SIGKILLs, repeated apiserver and etcd restarts, more rounds.
soak: venv controlplane
	SOAK=1 SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/integration/test_campaign.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(NODE_RED)/node_modules .mypy_cache .ruff_cache .pytest_cache
