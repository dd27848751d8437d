# make demo   sandbox + Meltano: tap-jsonl -> target-graphitenote, target-datainsider,
#             target-usmart and target-datatile, then what landed on each platform
# make test   the whole test suite (fails when no test is collected)
# make lint   ruff
# make postgresql   PostgreSQL's server binaries (Debian package) when missing; `make test` runs it
#
# Both virtualenvs are built on first use and rebuilt only when out of date:
#   .venv          python3 -m venv + pip install -e '.[test]'   (again when pyproject.toml changes)
#   .venv-meltano  meltano==$(MELTANO_VERSION) in a venv of its own (its pins clash with ours)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
MELTANO_VENV := .venv-meltano
MELTANO_VERSION := 4.4.1
VENV_STAMP := $(VENV)/.installed
MELTANO_STAMP := $(MELTANO_VENV)/.installed-meltano-$(MELTANO_VERSION)
MELTANO := $(MELTANO_VENV)/bin/meltano

SANDBOX_PORT ?= 8765
SANDBOX_DIR ?= .sandbox/demo
PYTEST_ARGS ?=

# Offline Meltano: no telemetry, no PyPI version check, no Python downloads by uv.
export MELTANO_SEND_ANONYMOUS_USAGE_STATS := false
export MELTANO_CLI_DISABLE_VERSION_CHECK := 1
export UV_PYTHON_DOWNLOADS := never
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help demo test lint venv meltano-venv clean-demo postgresql

help:
	@echo "make demo   start the sandbox (port $(SANDBOX_PORT)), meltano run tap-jsonl into target-graphitenote, target-datainsider, target-usmart and target-datatile, print what landed"
	@echo "make test   run the test suite (tests/)"
	@echo "make lint   ruff check"
	@echo "make postgresql   install PostgreSQL (apt-get, as root) if its server binaries are missing"

venv: $(VENV_STAMP)
meltano-venv: $(MELTANO_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $@

$(MELTANO_STAMP):
	@test -x $(MELTANO_VENV)/bin/python || $(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/python -m pip install -q meltano==$(MELTANO_VERSION)
	@rm -f $(MELTANO_VENV)/.installed-meltano-*
	@touch $@

# One shell for the whole recipe, so the trap stops the sandbox however the run ends.
demo: $(VENV_STAMP) $(MELTANO_STAMP)
	@set -euo pipefail; \
	mkdir -p $(SANDBOX_DIR); \
	log_dir=$$(dirname $(SANDBOX_DIR)); \
	echo "==> starting the sandbox on http://127.0.0.1:$(SANDBOX_PORT) (data in $(SANDBOX_DIR))"; \
	$(VENV)/bin/target-sandbox serve --data-dir $(SANDBOX_DIR) --port $(SANDBOX_PORT) \
		> $$log_dir/sandbox.log 2>&1 & \
	sandbox_pid=$$!; \
	trap 'kill $$sandbox_pid 2>/dev/null || true; wait $$sandbox_pid 2>/dev/null || true' EXIT; \
	for _ in $$(seq 150); do \
		grep -q '^sandbox listening on' $$log_dir/sandbox.log && break; \
		kill -0 $$sandbox_pid 2>/dev/null || { cat $$log_dir/sandbox.log; exit 1; }; \
		sleep 0.1; \
	done; \
	health=http://127.0.0.1:$(SANDBOX_PORT)/_sandbox/health; \
	$(VENV)/bin/python -c "import urllib.request as u; print(u.urlopen('$$health', timeout=5).read().decode())" \
		|| { echo "the sandbox did not answer on $$health"; cat $$log_dir/sandbox.log; exit 1; }; \
	echo "==> meltano install (log: $$log_dir/meltano-install.log)"; \
	$(MELTANO) install > $$log_dir/meltano-install.log 2>&1 \
		|| { tail -n 40 $$log_dir/meltano-install.log; exit 1; }; \
	echo "==> meltano run --full-refresh tap-jsonl target-graphitenote"; \
	TARGET_GRAPHITENOTE_API_URL=http://127.0.0.1:$(SANDBOX_PORT)/graphitenote/api \
		$(MELTANO) run --full-refresh tap-jsonl target-graphitenote; \
	echo "==> meltano run --full-refresh tap-jsonl target-datainsider"; \
	TARGET_DATAINSIDER_API_URL=http://127.0.0.1:$(SANDBOX_PORT)/datainsider/api \
		$(MELTANO) run --full-refresh tap-jsonl target-datainsider; \
	echo "==> meltano run --full-refresh tap-jsonl target-usmart"; \
	TARGET_USMART_API_URL=http://127.0.0.1:$(SANDBOX_PORT)/usmart \
		$(MELTANO) run --full-refresh tap-jsonl target-usmart; \
	echo "==> meltano run --full-refresh tap-jsonl target-datatile"; \
	TARGET_DATATILE_API_URL=http://127.0.0.1:$(SANDBOX_PORT)/datatile/api/v2 \
		$(MELTANO) run --full-refresh tap-jsonl target-datatile; \
	echo; echo "==> what landed in the sandbox"; \
	$(VENV)/bin/python demo/summary.py --data-dir $(SANDBOX_DIR) --dataset sandbox-dataset --rows 3; \
	echo; echo "Inspect it all: $(VENV)/bin/target-sandbox show --data-dir $(SANDBOX_DIR)"

clean-demo:
	rm -rf $(SANDBOX_DIR) .meltano

# PostgreSQL's server binaries, for tests/test_postgres_meltano.py (initdb/pg_ctl of a throwaway
# cluster). Nothing to do when they are there; otherwise apt-get as root (CI machines). Without
# root: a message, and the test is skipped (but fails when CI is set, so CI stops here).
PG_INITDB_GLOB ?= /usr/lib/postgresql/*/bin/initdb

postgresql:
	@if ls $(PG_INITDB_GLOB) >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "PostgreSQL's server binaries are missing ($(PG_INITDB_GLOB))."; \
		echo "Install them as root: apt-get install -y postgresql"; \
		echo "(without them tests/test_postgres_meltano.py is skipped, or fails when CI is set)"; \
		if [ -n "$$CI" ]; then exit 1; fi; exit 0; \
	fi; \
	echo "==> installing PostgreSQL: apt-get install postgresql"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
		>/dev/null && ls $(PG_INITDB_GLOB)

# pytest exits 5 when it collected no test: that is a failure here. Two workers (pytest-xdist):
# most tests wait on a target or Meltano process, so both cores stay busy; PYTEST_WORKERS=0
# runs everything in one process.
PYTEST_WORKERS ?= 2
test: $(VENV_STAMP) $(MELTANO_STAMP) postgresql
	@$(VENV)/bin/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'no tests collected'; exit 1; fi; exit $$rc

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
