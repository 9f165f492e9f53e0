# Set-up and checks. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.freqplug-installed
# The official AutoAttack is not on the package registry; an unchanged copy for the tests lies beside the
# checkout on the developers' machines (never part of the freqplug package). Absent: its tests skip.
AUTOATTACK ?= ../shared/third_party/auto-attack

.PHONY: install lint docs demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23"
	$(PY) -m pip install -e ".[all,test,bench,docs]"
	@if [ -d "$(AUTOATTACK)" ]; then $(PY) -m pip install "$(AUTOATTACK)"; fi
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/freqplug profile --out freqplug-report

lint: install
	$(PY) -m ruff check src tests bench examples docs

# The API reference; warnings are errors, so a broken docstring fails `make test`.
docs: install
	$(PY) -m sphinx -W -q -b html docs docs/_build/html

test: install lint docs
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache docs/_build docs/api
