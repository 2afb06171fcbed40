#!/usr/bin/env bash
# The wheels benchmarks/gpu/gpu_check.sh needs on the device tool's CUDA host, which reaches no registry: run this on a
# machine that does, in the repository root, then name `.whl` in the run's `carry` (benchmarks/README.md, "GPU run").
#
#   PYTHON=.venv/bin/python bash benchmarks/gpu/gpu_wheels.sh      # -> .whl/*.whl, ~41 MiB (git-ignored)
#
# What the host lacks, from pyproject's dependencies against its package list (the device README's KINDS.md):
#   numpy==1.26.4          the pytriton bundle's python-backend stub misreads BYTES tensors under NumPy 2 (the host
#                          has 2.5.2), and the stub runs isolated, so 1.26.4 must replace 2.x, not shadow it
#   nvidia-pytriton==0.7.0 tritonserver 2.51 with the python backend (installed without its Python dependencies:
#                          larr runs the bundled binary, never imports pytriton)
#   tritonclient==2.51.0   the grpc client and perf_analyzer (its libb64.so.0d and libcudart.so.12 are taken from
#                          the pytriton bundle by gpu_check.sh); grpcio, packaging and urllib3 are on the host
#   protobuf==6.31.1       the image's onnx 1.23 needs protobuf >= 5.26 (`runtime_version`), and tritonclient 2.51's
#                          generated code loads under 6.31 too; carried so that the version is known (on the H200,
#                          2026-11-30, a machine left with 4.25 by an earlier try failed `import onnx`)
#   python-rapidjson==1.20 tritonclient.grpc imports it (tritonclient[grpc]'s extra); the H200 image has none
# Everything else larr imports there (torch, transformers, tokenizers, safetensors, onnx, onnxruntime, pyyaml, tqdm,
# xxhash, prometheus-client, grpcio) is on the host; redis, fastapi and uvicorn are not, and the gpu profile needs none.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_35_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$download" \
  numpy==1.26.4 nvidia-pytriton==0.7.0 tritonclient==2.51.0 protobuf==6.31.1 python-rapidjson==1.20
rm -rf .whl
# leaves out what the host never runs and recompresses (LZMA): 84.6 MiB as downloaded would not fit in 64 MiB
"$PYTHON" benchmarks/gpu/carry_wheels.py "$download" .whl
