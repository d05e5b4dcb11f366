# FunPump: `make run` serves the app, `make test` runs the whole suite. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# A first run needs no configuration: debug mode with a development key, SQLite and the
# in-memory layer. Set DATABASE_URL / REDIS_URL / DJANGO_SECRET_KEY to change that.
export DJANGO_DEBUG ?= 1
export DJANGO_SETTINGS_MODULE := funpump.settings

.PHONY: run test lint typecheck pytest migrate demo voice-model bench bench-settlement bench-voice clean FORCE

# An interpreter named explicitly (PYTHON=python3.12 make run) that is not the one .venv was
# made with (its version and installation, as the venv's own python reports them) rebuilds
# .venv from scratch. Without PYTHON, whichever .venv exists is used.
IDENTIFY := import sys; print(".".join(map(str, sys.version_info[:3])), "in", sys.base_prefix)
ifneq ($(origin PYTHON),file)
ifneq ($(wildcard $(BIN)/python),)
VENV_HAS := $(shell $(BIN)/python -c '$(IDENTIFY)' 2>/dev/null)
VENV_WANTS := $(shell $(PYTHON) -c '$(IDENTIFY)' 2>/dev/null)
ifneq ($(VENV_HAS),$(VENV_WANTS))
REBUILD_VENV := FORCE
endif
endif
endif

$(BIN)/python: $(REBUILD_VENV)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "FunPump needs Python 3.11 or newer: PYTHON=$(PYTHON) is missing or older"; exit 1; }
	@$(if $(REBUILD_VENV),echo "rebuilding .venv (Python $(VENV_HAS)) with PYTHON=$(PYTHON) (Python $(VENV_WANTS))")
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt $(REBUILD_VENV) | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(REBUILD_VENV) | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

# Development settings for what is run by hand in this checkout (`.venv/bin/python manage.py
# createsuperuser`, `python -m funpump.serve`): debug mode and a secret key of its own. Written
# once, never overwritten; variables set in the environment win over it. Production sets its own.
.env: | $(BIN)/python
	@key=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') && umask 077 && \
		printf '# Development settings, written by make.\nDJANGO_DEBUG=1\nDJANGO_SECRET_KEY=%s\n' "$$key" > $@
	@echo "wrote .env: DJANGO_DEBUG=1 and a new DJANGO_SECRET_KEY, for development"

FORCE:

migrate: $(VENV)/.runtime | .env
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py create_environment "Demo launch" --id demo --if-missing --new-round-after 600

# The speech model, rebuilt for this machine's ONNX Runtime once (cached), not on the first call.
voice-model: $(VENV)/.runtime
	$(BIN)/python -m voice.speech.moonshine

run: demo voice-model
	@echo "FunPump on http://$(HOST):$(PORT)  (WebSocket ws://$(HOST):$(PORT)/ws)"
	$(BIN)/python -m funpump.serve -b $(HOST) -p $(PORT)

# lint-imports: the import contracts of pyproject.toml (imports run one way; no Django in the
# curve's math, the wire declaration or speech recognition).
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# The suite's own process: some tests leave a worker thread's pooled connection unreturned (the
# socket is closed when the thread ends, but the pool still counts it), so its pool gets room.
pytest: $(VENV)/.dev | .env
	FUNPUMP_DB_POOL_MAX=$${FUNPUMP_DB_POOL_MAX:-64} $(BIN)/python -m pytest

test: lint typecheck pytest

# Numbers, not assertions: FunPump as deployed (PostgreSQL, Redis, DEBUG off) against raw
# baselines in the same run; one table, saved under bench/results/ (bench/compare.py's
# docstring). BENCH_ARGS: e.g. --quick, --processes 2, --pairs 5, --server-root DIR.
bench: $(VENV)/.dev
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

# rewards settlement over SETTLE_TRADES unsettled trades (PostgreSQL's DATABASE_URL).
bench-settlement: $(VENV)/.dev
	$(BIN)/python bench/settlement.py $(SETTLE_TRADES)

SETTLE_TRADES ?= 1000000

# Voice recognition quality on speech synthesised at bench time (needs espeak-ng, flite and sox).
bench-voice: $(VENV)/.dev
	$(BIN)/python bench/voice.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
