# Two commands: `make demo` (the main job) and `make test` (the test suite); `make docs` builds the site.
# Each creates .venv with $(PYTHON) on first use and installs what it needs: `.[all,test]` (every backend,
# Dask, the test tools), and for `make test` and `make docs` the `docs` extra too (the suite builds the docs).
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DOCS_STAMP := $(VENV)/.installed-docs-stamp
# CI runs the slow tests too (they fit its budget); locally `make test` stays fast.
MARKERS ?= $(if $(filter true,$(CI)),,not slow)
# Test processes (pytest-xdist, a module per process): 2 locally; CI runs serially, because the slow set's
# wall-clock budget tests (P8) count compilation, which a second process on the same cores would slow.
WORKERS ?= $(if $(filter true,$(CI)),0,2)
OUT ?= out

.PHONY: demo test test-all docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), f"Python 3.12+ is needed, {sys.executable} is {sys.version.split()[0]}: run make PYTHON=python3.12"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[all,test,docs]'
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/motivating.py --out $(OUT)

test: $(DOCS_STAMP)
	$(BIN)/python -m pytest -m "$(MARKERS)" -q -n $(WORKERS) --dist loadfile

test-all: $(DOCS_STAMP)
	$(BIN)/python -m pytest -q

# The documentation site, warnings as errors (CI builds it too: tests/test_docs_examples.py).
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache docs/_build
