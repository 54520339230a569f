# `make run` and `make test` work from nothing: they create .venv when missing,
# install the project (editable, with the test and bench extras) and then act.
# Re-running is fast: the install step reruns only when pyproject.toml changes.
# The venv's Python (>= 3.12) is found by tools/find-python; `make PYTHON=...` picks one.
PYTHON ?=
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.toolkit-installed
PYTEST_ARGS ?=
# Test files run in parallel worker processes (pytest-xdist), one file per worker at a
# time: most of a cold run is XLA compiling, one executable at a time per process.
TEST_JOBS ?= -n auto --maxprocesses=4 --dist loadfile

.PHONY: venv run test test-slow test-all bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml tools/find-python
	@if ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	  py=$$(PYTHON="$(PYTHON)" sh tools/find-python) || exit 1; \
	  echo "creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments configs/quickstart.yaml

# pytest exits 5 when it collects no test at all; that alone is not a failure
# (every other non-zero code is passed on unchanged).
test: $(STAMP)
	@$(PY) -m pytest $(TEST_JOBS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m '' $(PYTEST_ARGS)

bench: $(STAMP)
	@set -e; for cfg in configs/bench/*.yaml; do \
	  echo "== $$cfg"; $(PY) -m experiments $$cfg; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
