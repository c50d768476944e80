# One venv for everything; `make test` is the README's test command, `make test-unit` the quick one.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: test test-unit lint docs run demo showcase clean

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

# The unit tests alone: no servers, no sockets, under a minute
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# docs/configuration.md from the settings classes (tests/unit/test_docs.py fails when it is out of date)
docs: $(STAMP)
	$(PY) -m pipeline config-docs

# Everything under supervisord (embedded Redis/ClickHouse unless configured); Ctrl-C stops it all. docs/operations.md
run: $(STAMP)
	$(PY) -m pipeline run --no-bootstrap

# The same against the simulator: live fills, trades in ClickHouse within seconds
demo: $(STAMP)
	$(PY) -m pipeline demo --no-bootstrap

# docs/img/dashboard.png and docs/queries.md from a fixed-seed, history-only world (headless Chromium)
showcase: $(STAMP)
	$(PY) -m pipeline.harness.showcase

clean:
	rm -rf $(VENV) .pytest_cache
