# LandFuse developer commands. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
XVFB := xvfb-run -a -s "-screen 0 1600x1000x24"

.PHONY: help setup demo test lint typecheck package qgis clean

help:
	@echo "make demo      set up if needed, then map the synthetic demo scene (land cover + change) into build/demo"
	@echo "make setup     install QGIS 3.22, rasterio, GDAL, Xvfb (Debian) and the .venv (idempotent)"
	@echo "make test      set up if needed, then run every test (unit, headless QGIS, real QGIS) under Xvfb"
	@echo "make lint      ruff check + ruff format --check"
	@echo "make typecheck mypy on core/ and models/"
	@echo "make package   build dist/landfuse-<version>.zip for QGIS 'Install from ZIP'"
	@echo "make qgis      open QGIS with the plugin linked into a dedicated profile (build/qgis-profile)"

setup:
	@bash scripts/setup.sh

demo: setup
	@mkdir -p build
	$(PY) scripts/demo.py

test: setup
	@mkdir -p build
	$(XVFB) $(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

package:
	/usr/bin/python3 scripts/package.py

qgis: setup
	@bash scripts/run_qgis.sh

clean:
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path "./.venv/*" -prune -exec rm -rf {} +
