# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --constraint constraints.txt

.PHONY: install install-test demo test lint down clean chart

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the dependency list or the pins change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/shipyard demo

test: install-test lint
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

down:
	$(BIN)/shipyard down

# The Serve config the Helm chart ships (deploy/helm/shipyard/files/serve-config.json),
# written from platform/shipyard/serving.py; tests/helm fails when it is stale.
chart: install
	$(BIN)/python -c "from shipyard.serving import write_chart_config; print(write_chart_config())"

clean:
	rm -rf $(VENV) build *.egg-info
