# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint screenshots bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/workbench

test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check workbench tests benchmarks
	$(VENV)/bin/lint-imports

screenshots: setup
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/workbench --screenshot docs/screenshots

clean:
	rm -rf $(VENV) build *.egg-info
