#!/bin/bash
# PLAN-gates-seeds.md: FinalMLP's gates read LARR's scene (ctr.backbone.fs_dense) on one of part B's stages-1/2 seeds
# (2024, 2025, 2026), LARR stage 3 on the given stage-3 seeds, paired with part A's ID-only runs; the stages-1/2
# seed 2024 runs of PLAN-gates.md row 1 (stage-3 seeds 2021-2023) are reused. Resumable: rerun after an interruption.
#   gates-seeds.sh 2025 2021 2022 2023 2024 2025
# The results file lists every finished stage-3 seed of this stages-1/2 seed, whichever invocation ran it.
set -euo pipefail
LLM_SEED=${1:?usage: gates-seeds.sh 2024|2025|2026 STAGE3_SEED...}; shift
cd "$(dirname "$0")/../../../../.."
R=benchmarks/studies/frappe/results/frappe-finalmlp
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
case "$LLM_SEED" in
  2024) L=runs/frappe-finalmlp-larr/llm ;;
  2025|2026) L=runs/frappe-finalmlp-larr-llm$LLM_SEED/llm ;;
  *) echo "stages-1/2 seed must be 2024, 2025 or 2026" >&2; exit 2 ;;
esac
G=runs/frappe-finalmlp-gates-llm$LLM_SEED
SCALE=$(python -c "import json; print(json.load(open('$R/gates/tune.json'))['chosen']['ctr.llm_input_scale'])")
mkdir -p "$G/llm" && ln -sfn ../frappe-finalmlp/data "$G/data"
for stage in pretrain embed; do ln -sfn "$(realpath "$L/$stage")" "$G/llm/$stage"; done
cp "$L/config.yaml" "$G/llm/config.yaml"
for s in 2021 2022 2023 2024 2025; do
  mkdir -p "$G/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$G/seed_$s/ctr/id_only"
  if [ "$LLM_SEED" = 2024 ] && [ "$s" -le 2023 ]; then  # PLAN-gates.md row 1's run
    ln -sfn "$(realpath runs/frappe-finalmlp-gates/seed_$s/ctr/larr)" "$G/seed_$s/ctr/larr"
  fi
done
DONE=$(for s in 2021 2022 2023 2024 2025; do if [ -e "$G/seed_$s/ctr/larr/result.json" ]; then echo "$s"; fi; done)
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$G" \
  --results "$R/gates-llm$LLM_SEED" --variants id_only larr --llm-seed "$LLM_SEED" \
  --seeds $(printf '%s\n' $DONE "$@" | sort -un) \
  --set ctr.backbone.fs_dense=true --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight=0.1
