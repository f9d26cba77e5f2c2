# Two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Reinstall only when pyproject.toml changes.
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test demo bench lint format clean install dev compile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	@echo "Installing clickstream into $(VENV) (first time: about a minute, chdb is ~500 MB)..."
	$(BIN)/pip install --progress-bar on -e '.[compile]'
	@touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	@echo "Installing clickstream with dev extras into $(VENV)..."
	$(BIN)/pip install --progress-bar on -e '.[dev,compile]'
	@touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)
dev: $(STAMP_DEV)

# The processor's core compiled with mypyc into build/core/ (stream/compiled.py): a no-op
# while the build matches the sources; on any failure, one line and pure Python.
compile: $(STAMP_RUN)
	@$(BIN)/python tools/compile_core.py

run: $(STAMP_RUN) compile
	$(BIN)/clickstream run

demo: $(STAMP_RUN) compile
	$(BIN)/clickstream run --simulate

test: $(STAMP_DEV) compile
	$(BIN)/python tests/setup_tools.py
	$(BIN)/python -m pytest -q

bench: $(STAMP_DEV) compile
	$(BIN)/python -m benchmarks

lint: $(STAMP_DEV)
	$(BIN)/ruff check stream tests benchmarks examples
	$(BIN)/ruff format --check stream tests benchmarks examples

format: $(STAMP_DEV)
	$(BIN)/ruff format stream tests benchmarks examples
	$(BIN)/ruff check --fix stream tests benchmarks examples

clean:
	rm -rf $(VENV) data .pytest_cache build/core build/core.log
