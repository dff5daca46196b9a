# Two entry points for a fresh machine: `make figures` and `make test`.
# Both install the pinned environment of requirements.lock (`make lock` refreshes it).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra pip-compile flags for `make lock`, e.g. LOCK_FLAGS=--upgrade to move every pin to the newest allowed.
LOCK_FLAGS ?=

.PHONY: figures test test-slow lint docs bench install lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Every direct and transitive dependency, dev extras included, with hashes, for the Python running it
# (3.11 on linux x86_64 for the committed lock). Existing pins are kept unless LOCK_FLAGS=--upgrade.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip show --quiet pip-tools 2>/dev/null || $(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra dev --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock $(LOCK_FLAGS) pyproject.toml

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

figures: $(STAMP)
	MPLBACKEND=Agg $(PY) -m experiments.make_figures

test: lint
	MPLBACKEND=Agg $(PY) -m pytest -q -n 2 --dist loadgroup

test-slow: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -n 2 --dist loadgroup -m slow

# API reference from the docstrings: open docs/_build/index.html.
docs: $(STAMP)
	$(PY) docs/build_api.py docs/_build

bench: $(STAMP)
	$(PY) -m experiments.benchmarks.throughput

clean:
	rm -rf $(VENV) docs/_build
