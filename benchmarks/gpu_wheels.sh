#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on the device tool's CUDA host, which reaches no registry: run this on a
# machine that does, in the repository root, then name `.whl` in the run's `carry` (benchmarks/README.md, "GPU run").
#
#   PYTHON=.venv/bin/python bash benchmarks/gpu_wheels.sh      # -> .whl/*.whl, ~39 MiB (git-ignored)
#
# What the host lacks, from pyproject's dependencies against its package list (the device README's KINDS.md):
#   numpy==1.26.4          the pytriton bundle's python-backend stub misreads BYTES tensors under NumPy 2 (the host
#                          has 2.5.2), and the stub runs isolated, so 1.26.4 must replace 2.x, not shadow it
#   nvidia-pytriton==0.7.0 tritonserver 2.51 with the python backend (installed without its Python dependencies:
#                          larr runs the bundled binary, never imports pytriton)
#   tritonclient==2.51.0   the grpc client and perf_analyzer (its libb64.so.0d and libcudart.so.12 are taken from
#                          the pytriton bundle by gpu_check.sh); grpcio, packaging and urllib3 are on the host
#   protobuf==4.25.9       pyproject pins protobuf<5 for tritonclient 2.51's generated code
# Everything else larr imports there (torch, transformers, tokenizers, safetensors, onnx, onnxruntime, pyyaml, tqdm,
# xxhash, prometheus-client) is on the host; redis, fastapi and uvicorn are not, and the gpu profile needs none.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_35_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$download" \
  numpy==1.26.4 nvidia-pytriton==0.7.0 tritonclient==2.51.0 protobuf==4.25.9
rm -rf .whl
# leaves out what the host never runs and recompresses (LZMA): 84.6 MiB as downloaded would not fit in 64 MiB
"$PYTHON" -m larr.benchmarks.carry_wheels "$download" .whl
