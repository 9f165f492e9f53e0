# Set-up and checks. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.freqplug-installed

.PHONY: install lint demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23"
	$(PY) -m pip install -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/freqplug profile --out freqplug-report

lint: install
	$(PY) -m ruff check src tests bench examples

test: install lint
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
