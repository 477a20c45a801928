# Two commands: `make run` (install and start on 127.0.0.1:8080) and `make test` (install everything, run the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))

.PHONY: run test install test-deps postgres node-deps bench check-policies clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the package (not editable: the same artefact production runs) and starts the server.
run: $(BIN)/python
	$(BIN)/pip install --quiet .
	$(BIN)/cds-service serve --host 127.0.0.1 --port $${PORT:-8080}

install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"

node-deps:
	npm ci --prefix tests/fhir_server --no-audit --no-fund --loglevel=error

# Debian's PostgreSQL server binaries, used by the tests to start a throwaway server on loopback.
postgres:
ifeq ($(PG_INITDB),)
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi
endif

test-deps: install node-deps postgres

test: test-deps
	$(BIN)/python tools/build_requests.py --check
	$(BIN)/python tools/terminology_doc.py --check
	$(BIN)/python -m pytest

# The benchmark (bench/README.md): wrk from Debian, the npm FHIR test server. `make bench BENCH_ARGS=--quick`.
bench: install node-deps
	@command -v wrk >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; fi; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

check-policies: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/cds-service check-policies

clean:
	rm -rf $(VENV) build *.egg-info tests/fhir_server/node_modules data .pytest_cache .hypothesis
