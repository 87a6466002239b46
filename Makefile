# Two commands do all set-up: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Prefect keeps its database and settings in the workspace, not in the user's home.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(BIN):$(PATH)

.PHONY: install demo test test-fast ui clean bench-train

# torch first, pinned to the CPU wheel: every later requirement it satisfies then installs nothing more.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "doclife needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install  ## the whole lifecycle on the built-in sample corpus, as a Prefect flow
	doclife run
	@echo
	@echo "champion:      $$(doclife status | tail -n 1 | xargs)"
	@echo "reports:       $(CURDIR)/reports  (validation Data Docs: reports/validate/data_docs/index.html)"
	@echo "quarantine:    $(CURDIR)/data/quarantine.parquet"
	@echo "history:       doclife history"

test: install  ## every test, the slow ones (end-to-end flow, 2-process ddp) included
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

ui: install  ## a local Prefect server and UI on 127.0.0.1:4200, over the same database as the demo
	prefect server start --host 127.0.0.1 --port 4200

bench-train: install  ## pretraining throughput vs the HF Trainer, and quality on the real corpus (README "Measured")
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.quality

clean:  ## remove every stage output, the registry and Prefect's database (keeps .venv)
	rm -rf data models reports registry .dvc-storage .prefect dvc.lock .dvc/cache .dvc/tmp
