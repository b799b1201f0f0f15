# Saga Relay. On a fresh machine (Python 3.11, no Redis) these two are all you need:
#   make run    # install, then start web + worker + scheduler on an embedded Redis
#   make test   # install dev deps, then lint, type-check and run the tests
# Every target installs what it needs itself; repeat runs skip pip unless a
# requirements file changed (stamp files in .venv/).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
MYPY_TARGETS := saga config launcher chaos

.DEFAULT_GOAL := help
.PHONY: help run test lint install install-dev clean distclean

help: ## Show this list of targets
	@echo "Usage: make <target>"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: install ## Start web, worker and scheduler from the Procfile on an embedded Redis (Ctrl-C stops all)
	$(BIN)/python -m launcher.run

# make chaos N=1000 CHAOS_ARGS="--seed 7 --kill-every 1"; python -m chaos --help lists the options.
N ?= 500
CHAOS_ARGS ?=
.PHONY: chaos
chaos: install ## Book N=500 viewings while SIGKILLing workers and restarting Redis; fail on anything lost or doubled
	$(BIN)/python -m chaos --sagas $(N) $(CHAOS_ARGS)

# make bench BENCH_ARGS="--quick --only noop,latency"; python -m bench --help lists the options.
BENCH_ARGS ?=
.PHONY: bench
bench: install ## Benchmarks, each figure beside a same-run baseline; writes bench/results/latest.json
	$(BIN)/python -m bench $(BENCH_ARGS)

test: lint browser ## Install dev deps and the browser, lint, type-check, then run the test suite
	$(BIN)/python -m pytest

# The operator's page is tested in a real headless Chromium: Debian's packages, installed only
# when missing (sudo only when not root).
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
BROWSER_PACKAGES := chromium chromium-driver
.PHONY: browser
browser: ## Install headless Chromium and chromedriver (Debian packages) for the browser tests, if missing
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "The browser tests need $(CHROMIUM) and $(CHROMEDRIVER), and apt-get is not available:" >&2; \
		echo "install Chromium and its chromedriver there by hand." >&2; exit 1; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	echo "Installing $(BROWSER_PACKAGES) for the browser tests"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(BROWSER_PACKAGES) \
	|| { $$SUDO apt-get update && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(BROWSER_PACKAGES); }

lint: install-dev ## Ruff lint and mypy type-check
	$(BIN)/ruff check .
	$(BIN)/mypy $(MYPY_TARGETS)

install: $(INSTALLED) ## Create .venv and install runtime dependencies (requirements.txt)

install-dev: $(INSTALLED_DEV) ## Create .venv and install runtime + dev dependencies (requirements-dev.txt)

clean: ## Remove var/ (local Redis data, sandbox ledger) and tool caches; keeps .venv
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean ## clean, and remove the virtualenv too
	rm -rf $(VENV)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "Saga Relay needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)." >&2; \
		echo "Run with e.g. 'make PYTHON=python3.11 ...'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "Could not create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }

# Stamps: pip runs again only when a requirements file is newer than the stamp.
$(INSTALLED): requirements.txt | $(BIN)/python
	$(PIP) install -q -r requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt, so this also satisfies the runtime stamp.
$(INSTALLED_DEV): requirements-dev.txt requirements.txt | $(BIN)/python
	$(PIP) install -q -r requirements-dev.txt
	touch $(INSTALLED) $@
