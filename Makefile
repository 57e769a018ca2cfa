# ModelPort: `make run` serves the API with embedded defaults; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test envs venv locks lint clean bench browser catalog

# The control environment: the project itself (editable) and its pinned dependencies, no ML framework.
$(STAMP): locks/control.txt pyproject.toml
	@echo "[make] creating the control environment in $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -qq --disable-pip-version-check --no-deps -r locks/control.txt
	@$(BIN)/pip install -qq --disable-pip-version-check --no-deps --no-build-isolation -e . 2>/dev/null \
		|| $(BIN)/pip install -qq --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

# Toolchain environments, one per lock file, built once into $$MODELPORT_HOME (default ~/.cache/modelport).
envs: $(STAMP)
	@$(BIN)/python -m worker.envs build

run: envs
	@$(BIN)/modelport run

test: envs
	@$(BIN)/python -m tests.run

# The page's browser test drives Debian's Chromium (the test installs it too when run as root).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@chromium --version


# Style, import boundaries (contracts in pyproject.toml) and types, in one command.
lint: $(STAMP)
	@$(BIN)/ruff check modelport domain app worker stages tests testkit bench
	@$(BIN)/ruff format --check modelport domain app worker stages tests testkit bench
	@$(BIN)/lint-imports --no-cache
	@$(BIN)/mypy

bench: envs
	@$(BIN)/python -m bench.pipeline

# Re-resolve every lock file from its .in (an upgrade is this one command, then `make envs`).
locks: $(STAMP)
	@$(BIN)/python -m worker.envs lock control
	@$(BIN)/python -m worker.envs lock torch
	@$(BIN)/python -m worker.envs lock onnx-tf
	@$(BIN)/python -m worker.envs lock onnx2tf

# The builder names the API checks a state dict's architecture against (after a torch lock change).
catalog: envs
	@PYTHONPATH=$(CURDIR) $$($(BIN)/python -c "from testkit.toolchains import toolchain_python; print(toolchain_python('torch'))") -m stages.export.catalog > domain/architectures.json

clean:
	rm -rf var .pytest_cache
