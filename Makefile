# AquaLens. `make run` starts a demo instance; `make test` runs the whole suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= aqualens-data

.PHONY: run test install migration bench models clean-data lint

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first and pinned: a CPU wheel of 2.13.0 is on these machines; a loose pin pulls CUDA.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/aqualens --data-dir $(DATA) demo
	$(BIN)/aqualens --data-dir $(DATA) serve

test: $(STAMP)
	$(BIN)/python scripts/setup_test_deps.py
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

migration: $(STAMP)
	$(BIN)/python scripts/regen_migration.py

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/search.py

# Reference models (issue 6): trained on ../shared/data, reproducible from the seed; the packages
# are committed under models/ so `make run` needs no download. Rebuild with `make models`.
models: $(STAMP)
	$(BIN)/python -m aqualens.training.reference --out models --threads 2

clean-data:
	rm -rf $(DATA)
