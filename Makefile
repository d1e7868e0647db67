# Thin, named entry points. Every target uses the virtual environment at .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS ?= pipeline,operator,api,dev
export UV_CACHE_DIR ?= $(HOME)/.cache/audioprocessor/uv

.PHONY: setup system-deps demo lint test test-fast cluster cluster-down cluster-bins promtool kueue-bin images bench crds clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1"
	$(UV) pip install --python $(PY) -e ".[$(EXTRAS)]"
	@touch $@

demo: setup
	$(PY) scripts/demo.py

# Everything CI runs: unit tests, pipeline tests on generated media, S3 tests against a
# local S3 server, and the e2e suite against a local Kubernetes control plane that the
# fixture builds (once, cached under ~/.cache/audioprocessor) and starts, with a real
# kubelet + containerd node running the images (built like `make images`) where it can.
test: setup system-deps cluster-bins promtool kueue-bin lint
	$(PY) -m pytest

# Lint and types, configured in pyproject.toml: ruff over the repository, mypy --strict over the
# three packages. Zero findings; any new one fails `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Debian packages the tests use: espeak-ng (real speech), chromium (the /ui browser tests,
# driven by Playwright), and for images and the real node the Docker engine, mmdebstrap,
# runc, the CNI plugins and iptables. Best effort: as root with apt, install what is
# missing; otherwise say so (those tests skip with the reason).
SYSTEM_PACKAGES := espeak-ng:espeak-ng chromium:/usr/bin/chromium docker.io:dockerd mmdebstrap:mmdebstrap \
  runc:runc containernetworking-plugins:/usr/lib/cni/bridge iptables:iptables
system-deps:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do pkg=$${entry%%:*}; probe=$${entry#*:}; \
	  command -v "$$probe" >/dev/null || [ -e "$$probe" ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed:$$missing (needs root and apt): the tests that use them will skip"; fi; \
	fi

# The job, operator and facade images (images/images.json) from Debian and PyPI alone;
# unchanged ones are not rebuilt. Starts Debian's dockerd (as root) if none runs.
images: setup system-deps
	$(PY) -m images build

# No cluster: unit tests and the static checks of the chart, the Dockerfiles, Tiltfile and compose
# file (testpaths in pyproject.toml); the e2e and slow tests are left out.
test-fast: setup
	$(PY) -m pytest -m "not e2e and not slow"

cluster-bins:
	bash e2e/controlplane/build-bins.sh

# promtool, from the Go module github.com/prometheus/prometheus: the chart's test_alert_rules.py
# runs its alert unit tests (charts/audioprocessor/tests/rules) with it.
promtool:
	bash e2e/controlplane/build-promtool.sh

# Kueue's controller manager and CRDs, for the e2e Kueue tests (docs/operator.md, Kueue).
kueue-bin:
	bash e2e/controlplane/build-kueue.sh

# The local control plane; as root with a Docker engine, also the real node, into which the
# images `make images` built are imported.
cluster: setup cluster-bins
	$(PY) -m e2e.cluster up --import-images

cluster-down:
	$(PY) -m e2e.cluster down

# Benchmarks print numbers beside a baseline measured in the same run; they assert nothing.
# bench/operator.py and bench/load_test.py need a cluster or a server: see docs/performance.md.
bench: setup
	$(PY) bench/pipeline.py $(BENCH_ARGS)
	$(PY) bench/extractors.py
	$(PY) bench/accuracy.py

# Regenerate the CRD from the pydantic models and refresh the chart's copies (tests check both).
crds: setup
	$(PY) -m audioproc_operator.crd > crds/audiojob.yaml
	cp crds/audiojob.yaml charts/audioprocessor/crds/audiojob.yaml
	cp crds/rbac.yaml charts/audioprocessor/files/operator-rbac.yaml

clean:
	rm -rf $(VENV) .pytest_cache
