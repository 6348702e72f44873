# Two commands do everything on a fresh machine:
#   make run    set up (venv, dependencies, embedded default model) and run the demo
#   make test   set up and run lint, type checks and the whole test suite on the real default model
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[default-model,dev]"
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/allinone run sentiment "这家酒店服务太差了，再也不来了"
	$(BIN)/allinone run sentiment "The room was spotless and the staff were lovely."
	printf '今天工作好累，老板还批评了我\n/exit\n' | $(BIN)/allinone chat --seed 7

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
