# Two commands for a fresh machine: `make demo` and `make test` (`make lint` runs ruff).
# Each creates .venv when missing and installs the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.epng-installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/epng demo --output demo_out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# ONNX Runtime and OpenVINO load thread runtimes of their own: their tests run in a process of
# their own, apart from the torch-only suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore-glob='tests/test_export_*.py'
	$(BIN)/python -m pytest -q tests/test_export_lpa.py tests/test_export_parity.py

clean:
	rm -rf $(VENV) demo_out
