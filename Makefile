# Two commands: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv with $(PYTHON) on first use and installs what it needs.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# CI runs the slow tests too (they fit its budget); locally `make test` stays fast.
MARKERS ?= $(if $(filter true,$(CI)),,not slow)
# Test processes (pytest-xdist, a module per process): 2 locally; CI runs serially, because the slow set's
# wall-clock budget tests (P8) count compilation, which a second process on the same cores would slow.
WORKERS ?= $(if $(filter true,$(CI)),0,2)
OUT ?= out

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), f"Python 3.12+ is needed, {sys.executable} is {sys.version.split()[0]}: run make PYTHON=python3.12"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/motivating.py --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -m "$(MARKERS)" -q -n $(WORKERS) --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
