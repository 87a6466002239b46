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

UI_HOST ?= 127.0.0.1
UI_PORT ?= 4200
SERVER_API := http://$(UI_HOST):$(UI_PORT)/api

.PHONY: install lock demo test test-fast ui schedule bench-ops bench-train bench-gpu bench-data bench-real bench-scale clean

# The versions the test suite last passed with (`make lock` refreshes them): a fresh install gets exactly
# these, so a new release of some transitive dependency cannot break it unannounced.
CONSTRAINTS := .ci/constraints.txt

# torch first, pinned to the CPU wheel: every later requirement it satisfies then installs nothing more.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "doclife needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

lock:  ## after `make test` passes: record every installed version in .ci/constraints.txt
	@{ echo "# The versions \`make test\` passed with; \`make lock\` rewrites this file from .venv. torch is"; \
	   echo "# installed first by the Makefile (CPU wheel) and is not pinned here."; \
	   $(BIN)/pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton)([=-]|$$)'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

demo: install  ## the whole lifecycle on the built-in sample corpus, as a Prefect flow
	doclife run
	@echo
	@doclife status
	@echo "reports:    $(CURDIR)/reports (Data Docs: reports/validate/data_docs/index.html)"
	@echo "quarantine: $(CURDIR)/data/quarantine.parquet"
	@echo "decisions:  .venv/bin/doclife history"

test: install  ## every test, the slow ones (end-to-end flow, 2-process ddp) included
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

ui: install  ## a local Prefect server and UI (SQLite in .prefect/; PREFECT_API_DATABASE_CONNECTION_URL for PostgreSQL)
	@echo "Prefect UI: http://$(UI_HOST):$(UI_PORT)  (API $(SERVER_API))"
	PREFECT_UI_API_URL=$(SERVER_API) prefect server start --host $(UI_HOST) --port $(UI_PORT)

schedule: install  ## serve the scheduled lifecycle and the source watcher against the server of `make ui`
	PREFECT_API_URL=$(SERVER_API) doclife serve

bench-ops: install  ## a full and a no-change lifecycle run against a running Prefect server: wall times, overhead
	$(BIN)/python -m bench.ops

bench-train: install  ## pretraining throughput vs the HF Trainer, quality, transfer from a checkpoint, the bf16 stream's numerics and bytes (docs/benchmarks.md)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test,bench]'
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.transfer
	$(BIN)/python -m bench.finetune_batches
	$(BIN)/python -m bench.residual_precision
	$(BIN)/python -m bench.layer_bytes

bench-gpu: install  ## on a CUDA machine: MFU of base in bf16, and pretrain + finetune quality with a GPU budget
	$(BIN)/python -m bench.mfu
	$(BIN)/python -m bench.quality --accelerator gpu --precision bf16-mixed --size mini --pretrain-steps 6000 \
		--pretrain-batch-size 128 --pretrain-lr 5e-4 --finetune-lrs 1e-4,5e-4 --finetune-seeds 2 --name quality_gpu

bench-real: install  ## the whole lifecycle on the real review corpus, categories and sentiment (30-35 min)
	$(BIN)/python -m bench.real_corpus

bench-data: install  ## cleaning + validation on every shared corpus, 1M documents, datatrove side by side, defect injection
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test,bench]'
	$(BIN)/python -m bench.data
	$(BIN)/python -m bench.datatrove_compare

bench-scale: install  ## pretraining data at 100k and 10M generated documents (tokenize, first step, RSS; shards vs in memory); the data stages on 1M and 10M documents in compressed shards, and a new 5% file
	$(BIN)/python -m bench.pretrain_scale
	$(BIN)/python -m bench.data_scale

clean:  ## remove every stage output, the registry and Prefect's database (keeps .venv)
	rm -rf data models reports registry .dvc-storage .prefect dvc.lock .dvc/cache .dvc/tmp
