# Two commands for a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned: `torch==2.13.0` is the CPU build on local disk;
# an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m zhplm.demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/encoder_forward.py
	$(BIN)/python benchmarks/pretrain_throughput.py
	$(BIN)/python benchmarks/finetune_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
