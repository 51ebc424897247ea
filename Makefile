# The two commands: `make run` (the quickstart) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The stamp is rebuilt whenever the dependencies change.
STAMP := $(VENV)/.installed

.PHONY: setup setup-test run test test-fast lint clean gpu-check setup-gpu-machine test-gpu-machine

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The browser tests drive Debian's Chromium; Playwright never downloads one. tini is the production image's
# init (PID 1): tests/test_production.py runs it in a PID namespace. The Fashion-MNIST tests read Debian's
# dataset-fashion-mnist (its IDX files in /usr/share/datasets/fashion-mnist).
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
setup-test: setup
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/tini ]; then \
		echo "installing Debian's chromium (the browser tests) and tini (the image's init)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium tini >/dev/null; \
	fi
	@if [ ! -f $(FASHION_MNIST) ]; then \
		echo "installing Debian's dataset-fashion-mnist for the Fashion-MNIST tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

run: setup
	$(BIN)/alexnet quickstart

test: setup-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The fast tier: the pure tests (tests/unit, and those marked `pure` beside the end-to-end tests they belong
# with): no training, no servers, no browser; well under a minute. `make test` runs them too, once.
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m pure

# The prepared GPU check (docs/gpu.md), straight from the source tree (PYTHONPATH=., no install): on the
# machine's own python3 where it has torch (a GPU machine's), else on the project's .venv, or on PYTHON=...;
# a tiny CPU version where there is no GPU. Report and log go to $OUT (default artifacts/gpu-check);
# ARGS go to the check (ARGS='--inject-fault swap-channels', ARGS='--model runs/digits').
ifeq ($(origin PYTHON),command line)
CHECK_PYTHON = $(PYTHON)
else
CHECK_PYTHON = $(shell if python3 -c 'import torch' >/dev/null 2>&1; then echo python3; \
	elif [ -x $(BIN)/python ]; then echo $(BIN)/python; fi)
endif

gpu-check:
	@python="$(CHECK_PYTHON)"; \
	if [ -z "$$python" ]; then \
		echo "error: python3 has no torch and there is no $(VENV): run \`make setup\` first, or pass PYTHON=/path/to/python with torch, torchvision, numpy, pillow, scikit-learn, onnx, onnxscript, onnxruntime and safetensors" >&2; \
		exit 2; \
	fi; \
	echo "PYTHONPATH=. $$python -m gpu_check $(ARGS)"; \
	PYTHONPATH=. $$python -m gpu_check $(ARGS)

# The GPU machine's versions (docs/gpu.md): Python 3.12, torch 2.11, torchvision 0.26, onnxruntime 1.30 and
# numpy 2, the oldest end of pyproject.toml's ranges (`make test` runs the newest). Its own virtual
# environment under ~/.cache, kept between runs, one per requirements file and Python version; the unit
# tests and the CPU version of the GPU check run on it from the source tree, as on that machine.
GPU_MACHINE_REQUIREMENTS := .ci/gpu-machine.txt
PYTHON312 ?= $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; do \
	if $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then echo $$p; fi; \
	done | head -n 1)
GPU_MACHINE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/alexnet-e2e
GPU_MACHINE_VENV = $(GPU_MACHINE_CACHE)/gpu-machine-$(shell ( cat $(GPU_MACHINE_REQUIREMENTS); \
	$(PYTHON312) -VV ) 2>/dev/null | sha256sum | cut -c1-16)

setup-gpu-machine:
	@if [ -z "$(PYTHON312)" ]; then \
		echo "error: no Python 3.12 found: install it (apt install python3.12-venv, or pyenv install 3.12), or pass PYTHON312=/path/to/python3.12" >&2; \
		exit 2; \
	fi
	@if [ ! -f $(GPU_MACHINE_VENV)/.installed ]; then \
		echo "creating $(GPU_MACHINE_VENV) (Python 3.12, $(GPU_MACHINE_REQUIREMENTS); a few minutes, once)"; \
		rm -rf $(GPU_MACHINE_VENV) && $(PYTHON312) -m venv $(GPU_MACHINE_VENV) && \
		$(GPU_MACHINE_VENV)/bin/python -m pip install --quiet --upgrade pip && \
		$(GPU_MACHINE_VENV)/bin/python -m pip install --quiet -r $(GPU_MACHINE_REQUIREMENTS) && \
		touch $(GPU_MACHINE_VENV)/.installed; \
	else \
		echo "using $(GPU_MACHINE_VENV)"; \
	fi

test-gpu-machine: setup-gpu-machine
	PYTHONPATH=. $(GPU_MACHINE_VENV)/bin/python -m pytest -p no:cacheprovider tests/unit
	$(MAKE) --no-print-directory gpu-check PYTHON=$(GPU_MACHINE_VENV)/bin/python \
		OUT=$(or $(OUT),artifacts/gpu-check-gpu-machine) CUDA_VISIBLE_DEVICES=

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs model_repository model_repository_fashion_mnist artifacts
