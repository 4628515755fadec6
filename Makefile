# The one entry point. `make serve` and `make test` work on a fresh machine:
# each creates .venv and installs the project into it first. `make serve` installs
# the runtime dependencies only; `make test` (and lint, bench...) adds the test and
# dev extras. Each install is remembered by a stamp file named after pyproject.toml's
# checksum, so editing pyproject.toml installs again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYPROJECT_SUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUNTIME_STAMP := $(VENV)/.installed-runtime-$(PYPROJECT_SUM)
STAMP := $(VENV)/.installed-dev-$(PYPROJECT_SUM)

.PHONY: serve test lint format bench clean install openapi vnu chromium screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.installed-runtime-*
	touch $@

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	rm -f $(VENV)/.installed-dev-*
	touch $@

install: $(STAMP)

serve: $(RUNTIME_STAMP)
	$(BIN)/syndicate serve

# The Nu HTML Checker (npm vnu-jar, run with the system's java) for
# tests/test_html_validity.py; `make test` installs it, `make serve` never needs it.
# Without npm the test is skipped (it fails under CI=true). --ignore-scripts: the
# package's postinstall would download a Java runtime.
VNU_VERSION := 26.9.27
VNU_STAMP := $(VENV)/vnu/.installed-$(VNU_VERSION)

$(VNU_STAMP): $(BIN)/python
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --prefix $(VENV)/vnu --no-audit --no-fund --ignore-scripts \
	    vnu-jar@$(VNU_VERSION) && rm -f $(VENV)/vnu/.installed-* && touch $@; \
	else \
	  echo "npm is not installed: tests/test_html_validity.py will be skipped"; \
	fi

vnu: $(VNU_STAMP)

# Chromium for the browser tests (tests/test_portal_browser.py) and `make screenshots`:
# Playwright drives Debian's, it cannot download its own here. Under CI=true a missing
# one is installed (apt-get, through sudo when not root) or the run fails saying how;
# otherwise nothing is ever installed system-wide and the browser tests are skipped.
CHROMIUM ?= /usr/bin/chromium

chromium:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	case "$$(echo "$${CI:-}" | tr A-Z a-z)" in 1|true|yes) ;; *) \
	  echo "$(CHROMIUM) is missing: the browser tests will be skipped" \
	       "(as root: apt-get install chromium)"; exit 0;; esac; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; \
	else echo "CI=true: $(CHROMIUM) is missing and this user cannot install it" \
	          "(not root, no sudo): run 'apt-get install chromium' as root first" >&2; exit 1; fi; \
	echo "CI=true: installing Chromium (apt-get install chromium)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y -qq chromium >/dev/null || \
	  { $$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "CI=true: 'apt-get install chromium' failed: install it as root" \
	         "(or set CHROMIUM=/path/to/chromium) and run again" >&2; exit 1; }; \
	[ -x "$(CHROMIUM)" ] || { echo "CI=true: chromium was installed but $(CHROMIUM)" \
	                             "is not there: set CHROMIUM=/path/to/chromium" >&2; exit 1; }

# Two workers (pytest-xdist): the suite runs in about 3 minutes instead of 6 on two
# cores; each worker has its own databases. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: $(STAMP) $(VNU_STAMP) chromium
	SYNDICATE_TEST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# PNGs of the portal's main pages at 1280 and 390 px into screenshots/ (not committed),
# for review: tools/screenshots.py runs the service on a throwaway SQLite database.
screenshots: $(STAMP) chromium
	$(BIN)/python tools/screenshots.py --chromium $(CHROMIUM) --out screenshots

lint: $(STAMP)
	$(BIN)/ruff check syndicate feeds storage tests bench tools
	$(BIN)/ruff format --check syndicate feeds storage tests bench tools
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix syndicate feeds storage tests bench tools
	$(BIN)/ruff format syndicate feeds storage tests bench tools

openapi: $(STAMP)
	$(BIN)/syndicate openapi > docs/openapi.json

# Benchmarks (bench/; BENCHMARKS.md explains them): prints every table, writes nothing.
# `make bench RECORD=1` also writes the run to a new bench/results/<date>T<time>-<machine>.md.
# wrk and nginx come from Debian; they are installed when missing and we can (root +
# apt-get), else the parts that need them are skipped with a message.
bench: $(STAMP)
	@for pkg in wrk:wrk nginx:nginx-light; do \
	  tool=$${pkg%%:*}; deb=$${pkg##*:}; \
	  if ! command -v $$tool >/dev/null 2>&1 && ! [ -x /usr/sbin/$$tool ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing $$deb (apt-get)"; \
	      (apt-get install -y -qq $$deb >/dev/null 2>&1 || \
	       (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$deb >/dev/null 2>&1)) || \
	        echo "could not install $$deb: benchmarks that need $$tool will be skipped"; \
	    else \
	      echo "$$tool is not installed and cannot be installed here (needs root + apt-get):" \
	           "benchmarks that need it will be skipped"; \
	    fi; \
	  fi; \
	done
	PATH="$$PATH:/usr/sbin" $(BIN)/python -m bench.run_all $(if $(RECORD),--record)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
