# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install imaginebot with its test tools

run: install  ## embedded Redis + a worker + the web chat on http://127.0.0.1:8080
	$(BIN)/imaginebot up

test: install  ## lint, then the whole test suite (real Redis, real Celery, real HTTP, Chromium)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install  ## queue overhead benchmark (numbers go to docs/benchmarks.md by hand)
	$(BIN)/python benchmarks/queue_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
