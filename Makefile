# One venv for everything; `make test` is the README's test command.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: test lint run demo showcase clean

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

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
