# Two commands for a fresh machine: `make demo` and `make test`.
# Everything lives in .venv/ at the project root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mnd-installed
DEMO := out/demo

.PHONY: setup demo test test-fast book book-gpu bench clean

setup: $(STAMP)

# torch/torchvision are pinned to the builds this project is tested with;
# torchattacks and facenet-pytorch go in with --no-deps (see README, Install notes).
# adversarial-library imports visdom at import time; visdom 0.2.4 (the last for
# Python 3.11) is a source distribution whose setup.py needs pkg_resources, which
# setuptools dropped in 81: it is built without build isolation against this
# venv's setuptools, held at >=77.0.3 (torch's floor) and <81
# (requirements-advlib.txt says more).
$(STAMP): pyproject.toml requirements-nodeps.txt requirements-advlib.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[book,test]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet 'setuptools>=77.0.3,<81'
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -r requirements-advlib.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mnd data embedded --out $(DEMO)/inputs
	$(BIN)/mnd attack $(DEMO)/inputs --model efficientnet_lite0 --method mnd --out $(DEMO)/mnd
	$(BIN)/mnd attack $(DEMO)/inputs --model efficientnet_lite0 --method bim --out $(DEMO)/bim

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

book: $(STAMP)
	$(BIN)/mnd book --preset embedded

# The same book on a CUDA GPU, with the trade-off chapter in full: no cut of its
# MND methods' iteration cap, nothing skipped (the CPU cuts are in the preset's notes).
book-gpu: $(STAMP)
	$(BIN)/mnd book --preset embedded --set device=cuda --set workers=1 --set tradeoff.max_iter=1000 --set 'tradeoff.skip={}'

bench: $(STAMP)
	$(BIN)/python benchmarks/attack_speed.py --quick

clean:
	rm -rf $(DEMO) results book/_build _build
