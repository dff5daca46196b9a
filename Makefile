# Two entry points for a fresh machine: `make figures` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: figures test test-slow bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

figures: $(STAMP)
	MPLBACKEND=Agg $(PY) -m experiments.make_figures

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -n 2 --dist loadgroup

test-slow: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q -n 2 --dist loadgroup -m slow

bench: $(STAMP)
	$(PY) -m experiments.benchmarks.throughput

clean:
	rm -rf $(VENV)
