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

.PHONY: run test lint typecheck pytest migrate demo voice-model bench bench-voice clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "FunPump needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

migrate: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py create_environment "Demo launch" --id demo --if-missing

# The speech model, rebuilt for this machine's ONNX Runtime once (cached), not on the first call.
voice-model: $(VENV)/.runtime
	$(BIN)/python -m voice.moonshine

run: demo voice-model
	@echo "FunPump on http://$(HOST):$(PORT)  (WebSocket ws://$(HOST):$(PORT)/ws)"
	$(BIN)/python -m funpump.serve -b $(HOST) -p $(PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

pytest: $(VENV)/.dev
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Numbers, not assertions: prints a table (server CPU per message, latencies, trades/s).
bench: demo $(VENV)/.dev
	$(BIN)/python bench/room.py
	$(BIN)/python bench/settlement.py $(SETTLE_TRADES)

SETTLE_TRADES ?= 1000000

# Voice recognition quality on speech synthesised at bench time (needs espeak-ng, flite and sox).
bench-voice: $(VENV)/.dev
	$(BIN)/python bench/voice.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
