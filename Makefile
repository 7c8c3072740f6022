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
# Debian packages a target needs: installed from the lists the machine has, else after updating them
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
apt_install = $(APT_GET) $(1) >/dev/null || { apt-get update -qq && $(APT_GET) $(1) >/dev/null; }

.PHONY: all venv controlplane node kubenode lint test unit integration e2e crds run demo bench bench-shards bench-latency soak clean \
	image nodered-image images mmdebstrap skopeo chromium

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	touch $@

venv: $(STAMP)

controlplane:
	bash hack/controlplane/build.sh

# A real kubelet node for the e2e tests and the demo, where the machine allows it (root, cgroups,
# overlayfs, namespaces): Debian's runc and CNI plugins (and gcc for the static pause binary) when
# missing, then kubelet, kube-scheduler and containerd built by hack/node (cached). Elsewhere it
# says why not, and the tests that need the node skip with that reason.
NODE_DEBS := runc containernetworking-plugins gcc libc6-dev
kubenode: venv
	@why=$$($(PY) -m spacesecrets.devtools.node why-not --host); \
	if [ -n "$$why" ]; then echo "kubenode: no real node on this machine: $$why"; exit 0; fi; \
	missing=$$(for p in $(NODE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "kubenode: installing" $$missing; $(call apt_install,$$missing); \
	fi; \
	bash hack/node/build.sh >/dev/null && echo "kubenode: $$($(PY) -m spacesecrets.devtools.node why-not || true)" \
	  | sed 's/^kubenode: $$/kubenode: ready (kubelet, containerd, runc)/'

# The browser tests (tests/e2e/test_ui.py) drive Debian's chromium through Playwright's Python
# package, which is told where it is: Playwright never downloads a browser here.
chromium:
	@dpkg -s chromium >/dev/null 2>&1 || { echo "chromium: installing Debian's chromium"; \
	  $(call apt_install,chromium); }

$(NODE_STAMP): $(NODE_RED)/package-lock.json
	cd $(NODE_RED) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node: $(NODE_STAMP)

# The images (hack/image/build.sh): Debian from its mirror by mmdebstrap, packages from PyPI and npm,
# this tree; no Docker, no registry. Needs root. Each writes dist/<image>.oci.tar, for
# `podman load -i`, `docker load -i` or `ctr -n k8s.io images import`.
mmdebstrap:
	@command -v mmdebstrap >/dev/null || { echo "mmdebstrap: installing Debian's mmdebstrap"; \
	  $(call apt_install,mmdebstrap); }

# The image tests read each archive with containers/image as well (what `podman load` uses).
skopeo:
	@command -v skopeo >/dev/null || { echo "skopeo: installing Debian's skopeo"; \
	  $(call apt_install,skopeo); }

image: venv mmdebstrap
	PYTHON=$(PY) bash hack/image/build.sh operator

nodered-image: venv mmdebstrap
	PYTHON=$(PY) bash hack/image/build.sh nodered

images: image nodered-image

lint: venv
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: venv
	$(VENV)/bin/spacesecrets crds --out crds

test: venv controlplane kubenode node mmdebstrap skopeo chromium lint
	cd $(NODE_RED) && npm test
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

run: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(VENV)/bin/spacesecrets dev

demo: venv controlplane kubenode
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(VENV)/bin/spacesecrets dev --demo

bench: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/bench/test_bench.py -s $(PYTEST_ARGS)

# the cold start served by 1, 2 and 4 shards (BENCH_SHARDS), each on a fresh control plane
bench-shards: venv controlplane
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/bench/test_shards.py -s $(PYTEST_ARGS)

# set -> a running Node-RED flow's global context on the real node, in legs (about 10 minutes)
bench-latency: venv controlplane kubenode nodered-image
	SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/bench/test_latency.py -s $(PYTEST_ARGS)

# The long reliability campaign: 50 SIGKILLs, repeated apiserver and etcd restarts, more rounds;
# and the sharding campaign: 20 shard SIGKILLs during a change storm.
soak: venv controlplane
	SOAK=1 SPACESECRETS_CONTROLPLANE_BIN=$(CONTROLPLANE) $(PY) -m pytest tests/integration/test_campaign.py tests/integration/test_shard_campaign.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(NODE_RED)/node_modules .mypy_cache .ruff_cache .pytest_cache dist
