# The two commands: `make run` (the quickstart) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The stamp is rebuilt whenever the dependencies change.
STAMP := $(VENV)/.installed

.PHONY: setup setup-test run test test-fast lint clean gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The browser tests drive Debian's Chromium; Playwright never downloads one. The Fashion-MNIST tests read
# Debian's dataset-fashion-mnist (its IDX files in /usr/share/datasets/fashion-mnist).
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
setup-test: setup
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
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

# The pure parts only (tests/unit): no training, no servers, no browser; well under a minute.
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/unit

# The prepared GPU check (docs/gpu.md): straight from the source tree on the machine's own python3 (or
# PYTHON=...), no virtual environment; a tiny CPU version where there is no GPU. Report and log go to $OUT
# (default artifacts/gpu-check).
gpu-check: PYTHON = python3
gpu-check:
	PYTHONPATH=. $(PYTHON) -m export.gpu_check

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs model_repository model_repository_fashion_mnist artifacts
