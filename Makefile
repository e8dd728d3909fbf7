# Two commands for a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned: `torch==2.13.0` is the CPU build on local disk;
# an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-uer clean

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

# Side by side with UER-py: UER=path/to/a/checkout/of/dbiir/UER-py
bench-uer: $(STAMP)
	@test -n "$(UER)" || { echo "usage: make bench-uer UER=path/to/UER-py"; exit 2; }
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python benchmarks/preprocess_vs_uer.py --uer $(UER)
	$(BIN)/python benchmarks/pretrain_vs_uer.py --uer $(UER)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
