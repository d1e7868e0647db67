# Thin, named entry points. Every target uses the virtual environment at .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS ?= pipeline,operator,api,dev
export UV_CACHE_DIR ?= $(HOME)/.cache/audioprocessor/uv

.PHONY: setup system-deps demo test test-fast cluster cluster-down cluster-bins bench crds clean

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
# fixture builds (once, cached under ~/.cache/audioprocessor) and starts.
test: setup system-deps cluster-bins
	$(PY) -m pytest

# espeak-ng gives the tests real speech; without it those tests skip. Best effort: as root
# with apt, install it; otherwise say so and go on.
system-deps:
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; } \
	  || echo "espeak-ng is not installed: the speech tests will skip"

test-fast: setup
	$(PY) -m pytest -m "not e2e and not slow"

cluster-bins:
	bash e2e/controlplane/build-bins.sh

cluster: setup cluster-bins
	$(PY) -m e2e.cluster up

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
