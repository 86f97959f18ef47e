# Two commands do all set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
# axe-core for the browser tests' accessibility checks: fetched at install time, not committed.
AXE_VERSION := 4.10.3
AXE_DIR := .cache/axe
AXE := $(AXE_DIR)/axe.min.js

.PHONY: install run test lint format clean axe

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Re-fetched when missing or of another version (its first line names the version).
axe:
	@head -n 1 $(AXE) 2>/dev/null | grep -qF "axe v$(AXE_VERSION)" || { \
	  mkdir -p $(AXE_DIR) && \
	  npm pack --silent --pack-destination $(AXE_DIR) axe-core@$(AXE_VERSION) >/dev/null && \
	  tar -xzf $(AXE_DIR)/axe-core-$(AXE_VERSION).tgz -C $(AXE_DIR) --strip-components=1 \
	    package/axe.min.js && \
	  rm $(AXE_DIR)/axe-core-$(AXE_VERSION).tgz && \
	  head -n 1 $(AXE) | grep -qF "axe v$(AXE_VERSION)"; }

run: install  ## install, load the demo city, serve it on http://127.0.0.1:8000 with its feeds
	$(BIN)/tracker demo
	@# The feed scheduler runs beside the web server; Ctrl-C (or the server ending) stops both.
	$(BIN)/tracker scheduler & scheduler=$$!; \
	trap 'kill -TERM $$scheduler 2>/dev/null; wait $$scheduler' EXIT INT TERM; \
	$(BIN)/tracker serve --host $(HOST) --port $(PORT)

test: install axe  ## install, lint, run every test (SQLite and PostgreSQL, and the browser)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# One worker per core; the browser tests share one worker (one demo city, one Chromium).
	@# The slowest tests are listed at the end, to keep the whole run well under 15 minutes.
	$(BIN)/pytest -n auto --dist loadgroup --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache $(AXE_DIR) test-artifacts
