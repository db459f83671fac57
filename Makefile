# megacode developer entry points. Every target goes through `setup`, which is idempotent:
# it makes .venv once and reinstalls the package only when setup.py or csrc/ changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.megacode-installed
NPROC_PER_NODE ?= 4

.PHONY: setup test quickstart clean eval-toolchains

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# torch is installed first and pinned: the local CPU wheel, never a CUDA download.
# --no-build-isolation: the build uses this venv's torch/pybind11 instead of fetching new ones.
$(STAMP): $(VENV)/bin/python setup.py $(wildcard csrc/*.cpp csrc/*.h)
	$(PIP) install -q torch==2.13.0 pybind11 setuptools wheel
	$(PIP) install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

# Compilers and runtimes of the MultiPL-E sandbox tests (quick when already installed).
eval-toolchains:
	bash tools/install_eval_toolchains.sh

test: setup eval-toolchains
	$(PY) -m pytest -q tests

quickstart: setup
	NPROC_PER_NODE=$(NPROC_PER_NODE) PYTHON=$(PY) bash launch/quickstart.sh

clean:
	rm -rf build *.egg-info megacode/*.so runs .quickstart
