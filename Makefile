# The two commands from the README: `make demo` and `make test`.
# Both create the virtual environment and install everything a fresh machine lacks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?= --duration 60

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tools/timescale-check/package-lock.json
	bash scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	-if command -v npm >/dev/null 2>&1; then cd tools/timescale-check && npm ci --no-audit --no-fund --silent; else echo "note: npm missing; the TimescaleDB DDL check will be skipped" >&2; fi
	touch $@

demo: setup
	$(BIN)/citywatch demo $(DEMO_ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/citywatch bench worker
	$(BIN)/citywatch bench sink
	$(BIN)/citywatch bench ingest

clean:
	-$(BIN)/citywatch stack down
	rm -rf $(VENV) .citywatch
