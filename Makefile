# Two entry points (see README): `make index` sets everything up and indexes the bootcamp subset into the embedded
# Milvus Lite (./mmsearch.db); `make test` sets up and runs the offline test suite. Both are safe to re-run.
# Both install from requirements.lock (every package, direct and transitive, pinned with hashes): a fresh machine
# gets exactly the versions CI tested. `make lock` regenerates it from pyproject's ranges.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
UV ?= uv

.PHONY: setup index test lint browser lock versions

# The stamp depends on the lock and pyproject, so editing either rebuilds the venv from the lock.
$(VENV)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The lock targets Linux x86_64, CPython 3.11, with the CPU torch wheel from /opt/wheels (this machine family).
lock:
	$(UV) pip compile pyproject.toml requirements/torch-cpu.in --extra dev --extra ray --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
		--no-header --emit-find-links -o $(LOCK)

versions: setup
	@$(BIN)/python -c "import importlib.metadata as m; print('versions:', ', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'pymilvus', 'milvus-lite', 'outlines', 'outlines-core', 'ray')))"

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

test: setup browser versions
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q
