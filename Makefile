# The README's two commands: `make run` (set up, then the main job) and `make test`.
# Re-running skips what is done; the package is reinstalled (and cffi_uffd recompiled) when
# pyproject.toml, setup.py or the cffi build inputs change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What the installed package is built from: a change here means pip must install again. Every
# cffi build script and its C sources (cffi_uffd/_cffi_src/, migrator/_cffi_src/), without what
# cffi generates from them when a script is run by hand.
BUILD_INPUTS := pyproject.toml setup.py \
	$(filter-out %/_native.c,$(wildcard cffi_uffd/_cffi_src/* migrator/_cffi_src/*))
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test
EXPERIMENT_ARGS ?= --out results/latest
PYTEST_ARGS ?=
DEPLOY_CHECK_ARGS ?=

.PHONY: run test clean system-deps build-deps image deploy-check

run: $(INSTALLED)
	$(BIN)/migrator host check
	$(BIN)/migrator experiment $(EXPERIMENT_ARGS)

test: system-deps $(INSTALLED_TEST)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The container images (deploy/Containerfile, deploy/prometheus/Containerfile) under podman: Debian
# bases made by mmdebstrap (cached in podman's store), wheels built here, no network in the build.
image: system-deps $(INSTALLED_TEST)
	PYTHONPATH=deploy $(BIN)/python -m deploycheck.build

# deploy/ run for real: image, a migration in containers with Prometheus, deploy/k8s/ played as
# pods, deploy/compose.yaml under podman-compose; cleans up after itself; one summary line.
deploy-check: system-deps $(INSTALLED_TEST)
	PYTHONPATH=deploy $(BIN)/python -m deploycheck $(DEPLOY_CHECK_ARGS)

# Prometheus, Chromium and iproute2 for the tests that use real ones (apt, where missing).
system-deps:
	.ci/system-deps

# gcc, the kernel headers and libxxhash-dev for the build (apt as root, where missing).
build-deps:
	.ci/build-deps

# The venv, from the machine's python3 (>= 3.11). A venv whose interpreter link dangles (its
# base Python was removed) counts as missing and is made again.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "make: migrator needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
		     "Run with PYTHON=/path/to/python3.11 or newer." >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		echo "make: $(PYTHON) cannot create a venv (no ensurepip): apt-get install python3-venv" >&2; \
		exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)

# build-deps is order-only: checked before every install, never a reason for one.
$(INSTALLED): $(BIN)/python $(BUILD_INPUTS) | build-deps
	$(BIN)/python -m pip install -e .
	touch $@

# The test extras include everything `run` needs, so both stamps are fresh afterwards.
$(INSTALLED_TEST): $(BIN)/python $(BUILD_INPUTS) | build-deps
	$(BIN)/python -m pip install -e '.[test]'
	touch $(INSTALLED) $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	rm -f cffi_uffd/_native*.so migrator/guest/_native*.so migrator/_dataplane*.so
	find migrator cffi_uffd tests loadtests -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
