# Two entry points for a fresh machine (see README):
#   make run   - set up .venv and run the main job
#   make test  - set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
OUT ?= out
BIN := $(VENV)/bin

.PHONY: setup run test lint typecheck bench clean

$(BIN)/codemill: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from the CPU build on disk; the constraints keep it fixed afterwards.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/pip check
	touch $(BIN)/codemill

setup: $(BIN)/codemill

run: setup
	$(BIN)/codemill run --out $(OUT)

test: setup
	$(BIN)/pytest -q -n 2 tests

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/bench_curation.py
	$(BIN)/python benchmarks/bench_dedup.py

clean:
	rm -rf $(VENV) $(OUT)
