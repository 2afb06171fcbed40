#!/usr/bin/env bash
# The GPU run (scene-table build and serving) in one command, sized for 8 minutes on one CUDA host that has torch
# but neither onnxruntime-gpu nor TensorRT (the device tool's H200; benchmarks/README.md, "GPU run"):
#
#   bash benchmarks/gpu/gpu_check.sh                 # results in $OUT/<machine>/ (the device tool's OUT), else runs/gpu-check/out
#   bash benchmarks/gpu/gpu_check.sh --out DIR --checkpoints runs/demo/run
#   bash benchmarks/gpu/gpu_check.sh --no-install --device cpu --llm-size tiny --precompute-texts 64 --target-seconds 0.5
#                                                # the reduced CPU form (tests/integration/test_gpu_check.py)
#
# Steps, each timed and stopped at its budget. The budgets add up to 525 s, under the device tool's 10 minutes per
# command; the steps' expected times (comments below) add up to under 8 minutes:
#   setup       the wheels carried in .whl/ (benchmarks/gpu/gpu_wheels.sh) and this project, into the interpreter's own
#               environment: the python-backend stub runs isolated (PYTHONPATH is ignored), so NumPy 1.26 must
#               replace NumPy 2 where the stub finds its packages, not shadow it through PYTHONPATH
#   base_run    a trained run for the tokenizer, the dataset and the CTR heads' shapes (--checkpoints, else the
#               synthetic data and a few training steps: the LLM at the measured shape has random weights anyway)
#   precompute  step 1: the scene-table build at the Qwen2.5-0.5B shape, bf16, tokens/s and MFU (bf16 peak), as
#               `larr embed-scenes` runs by default, then again with --compile (torch.compile per layer)
#   serve       step 2: larr bench --profile gpu: the ensemble served by PyTorch on the GPU vs the full-text baseline
#   report      OUT/<machine>/README.md naming the device
set -uo pipefail

# Seconds. base_run took 54-57 s on 2 shared CPU cores; precompute is two builds of ~5 s of embedding each, after
# building the random-weight 0.5B embedder (once) and loading it (twice), the second build compiling one layer's
# graph first (13 s for a small model on 2 CPU cores); serve is ~80 s of 0.5B export (ONNX for the version digest,
# the scene table on the GPU) and ~25 s per fresh server, four per repeat: one repeat fits, two would not.
BUDGET_SETUP=${BUDGET_SETUP:-45}
BUDGET_BASE_RUN=${BUDGET_BASE_RUN:-75}
BUDGET_PRECOMPUTE=${BUDGET_PRECOMPUTE:-120}
BUDGET_SERVE=${BUDGET_SERVE:-270}
BUDGET_REPORT=${BUDGET_REPORT:-15}

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS=${OUT:-$ROOT/runs/gpu-check/out}
WORK=$ROOT/runs/gpu-check/work
CHECKPOINTS=""
INSTALL=1
ONLY_PRECOMPUTE=0
DEVICE=cuda
BENCH_FLAGS=()
PRECOMPUTE_FLAGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) RESULTS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --checkpoints) CHECKPOINTS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --device) DEVICE=$2; shift 2 ;;
    --llm-size) PRECOMPUTE_FLAGS+=(--llm-size "$2"); BENCH_FLAGS+=(--llm-sizes "$2" --headline-size "$2"); shift 2 ;;
    --precompute-texts) PRECOMPUTE_FLAGS+=(--texts "$2"); shift 2 ;;
    --precompute-batch-size) PRECOMPUTE_FLAGS+=(--batch-size "$2"); shift 2 ;;
    --only-precompute) ONLY_PRECOMPUTE=1; shift ;;
    --target-seconds) BENCH_FLAGS+=(--target-seconds "$2"); shift 2 ;;
    --repeats) BENCH_FLAGS+=(--repeats "$2"); shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$RESULTS" "$WORK"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(cd "$WORK" && pwd)
LOG=$RESULTS/gpu_check.log
STEPS=$WORK/steps.tsv
: >"$STEPS"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
cd "$ROOT" || exit 2

# step NAME BUDGET_S COMMAND...: run it under `timeout` (SIGTERM: larr stops the servers it started; a shell
# function runs in a child bash), record name, budget, elapsed seconds and exit code in steps.tsv
step() {
  local name=$1 budget=$2 start elapsed code
  shift 2
  echo "=== $name (budget ${budget} s) ==="
  start=$EPOCHREALTIME
  if [ "$(type -t "$1")" = function ]; then
    timeout -k 15 "$budget" bash -c "$*"
  else
    timeout -k 15 "$budget" "$@"
  fi
  code=$?
  elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\t%s\n' "$name" "$budget" "$elapsed" "$code" >>"$STEPS"
  echo "=== $name: exit $code after $elapsed s ==="
  return "$code"
}

setup() {
  if [ "$INSTALL" = 1 ]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade .whl/*.whl || return 1
    fi
    # --no-build-isolation: nothing can be fetched there; setuptools is in the image
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
    # Packages built against NumPy 2 that transformers imports when present (seen on an H100 host: scipy,
    # scikit-learn) cannot load under NumPy 1.26: remove those that fail, on this throw-away machine only. The
    # submodule is what transformers imports: on the H200 `import scipy` loads and `scipy.optimize` fails (np.long).
    for pair in scipy:scipy.optimize scikit-learn:sklearn; do
      local package=${pair%%:*} module=${pair#*:}
      if "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${module%%.*}') is None)" 2>/dev/null \
         && ! "$PYTHON" -c "import $module" 2>/dev/null; then
        echo "setup: $module does not import under this NumPy: uninstalling $package"
        "$PYTHON" -m pip uninstall -q -y "$package"
      fi
    done
  fi
  # perf_analyzer links libb64.so.0d and libcudart.so.12, which the pytriton bundle carries under other names
  local libs=$WORK/lib bundle
  bundle=$("$PYTHON" -c "import importlib.util, pathlib; s = importlib.util.find_spec('pytriton'); \
print(pathlib.Path(s.origin).parent.parent / 'nvidia_pytriton.libs' if s else '')")
  mkdir -p "$libs"
  if [ -n "$bundle" ] && [ -d "$bundle" ]; then
    for pair in "libb64.so.0d:libb64-*.so.0d" "libcudart.so.12:libcudart-*.so.12*"; do
      local soname=${pair%%:*} pattern=${pair#*:} found
      if ! ldconfig -p | grep -q "$soname"; then
        found=$(compgen -G "$bundle/$pattern" | head -n 1)
        [ -n "$found" ] && ln -sf "$found" "$libs/$soname"
      fi
    done
  fi
  "$PYTHON" - <<'EOF'
import numpy, torch
print(f"setup: numpy {numpy.__version__}, torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
EOF
}

base_run() {
  local data=$WORK/base/data run=$WORK/base/run
  [ -f "$run/ctr/larr/ctr.json" ] && return 0
  "$PYTHON" -m larr data synth --out "$data" &&
    "$PYTHON" -m larr train all --out "$run" --data "$data" --set pretrain.max_steps=20 --set embed.max_steps=5 \
      --set ctr.max_epochs=1 --set "ctr.variants=[larr]"
}

export -f setup base_run
export PYTHON WORK INSTALL
SECONDS=0
step setup "$BUDGET_SETUP" setup || echo "gpu_check.sh: setup failed; the steps below will say what is missing"
export LD_LIBRARY_PATH=$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [ -z "$CHECKPOINTS" ]; then
  CHECKPOINTS=$WORK/base/run
  step base_run "$BUDGET_BASE_RUN" base_run
fi
step precompute "$BUDGET_PRECOMPUTE" "$PYTHON" benchmarks/gpu/gpu_check.py precompute --compiled --checkpoints "$CHECKPOINTS" \
  --work "$WORK/bench" --out "$RESULTS" --device "$DEVICE" "${PRECOMPUTE_FLAGS[@]}"
[ "$ONLY_PRECOMPUTE" = 1 ] || step serve "$BUDGET_SERVE" "$PYTHON" benchmarks/gpu/gpu_check.py serve --checkpoints "$CHECKPOINTS" \
  --work "$WORK/bench" --out "$RESULTS" --device "$DEVICE" "${BENCH_FLAGS[@]}"
step report "$BUDGET_REPORT" "$PYTHON" benchmarks/gpu/gpu_check.py report --out "$RESULTS" --steps "$STEPS" \
  --device "$DEVICE"
echo "gpu_check.sh: ${SECONDS} s in all; results in $RESULTS"
# the exit code says whether both measurements finished
awk -F'\t' '($1 == "precompute" || $1 == "serve") && $4 != 0 { bad = 1 } END { exit bad }' "$STEPS"
