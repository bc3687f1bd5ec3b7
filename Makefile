# Two entry points (see README): `make index` sets everything up and indexes the bootcamp subset into the embedded
# Milvus Lite (./mmsearch.db); `make test` sets up and runs the offline test suite. Both are safe to re-run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned: the CPU build; an unpinned torch would pull several GB of CUDA wheels.
TORCH ?= torch==2.13.0

.PHONY: setup index test lint browser

$(BIN)/mmsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/mmsearch

setup: $(BIN)/mmsearch

index: setup
	$(BIN)/mmsearch index --source bootcamp

# Debian's chromium for the browser test (root only; without it that one test skips and says why).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the browser test will skip"; }

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: setup browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q
