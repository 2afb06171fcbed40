#!/bin/bash
# PLAN-recipe.md step 2: FinalMLP with the learning-rate schedule the pilot chose on validation
# (ctr.lr_decay_patience 2, ctr.patience 3). Resumable: rerun after an interruption.
#   recipe.sh id-only [STAGE3_SEED...]   ID-only FinalMLP (default seeds 2021-2025)
#   recipe.sh 2024|2025|2026 [STAGE3_SEED...]   stages 1-2 with that seed, then LARR stage 3 paired with the ID-only
#                                          runs above (run those first), at part B's tuned scale and align weight
# Then: python benchmarks/studies/frappe/frappe_llm_seeds.py benchmarks/studies/frappe/results/frappe-finalmlp/recipe-llm*/results.json \
#         --out benchmarks/studies/frappe/results/frappe-finalmlp/recipe-llm-seeds
set -euo pipefail
WHAT=${1:?usage: recipe.sh id-only|2024|2025|2026 [STAGE3_SEED...]}; shift
SEEDS=("$@"); [ ${#SEEDS[@]} -gt 0 ] || SEEDS=(2021 2022 2023 2024 2025)
cd "$(dirname "$0")/../../../../.."
R=benchmarks/studies/frappe/results/frappe-finalmlp
A=runs/frappe-finalmlp                  # part A: the converted data
I=runs/frappe-finalmlp-recipe           # ID-only FinalMLP with the chosen schedule
SCHEDULE=(--set ctr.lr_decay_patience=2 --set ctr.patience=3)
if [ "$WHAT" = id-only ]; then
  mkdir -p "$I" && ln -sfn ../frappe-finalmlp/data "$I/data"
  exec nice -n 10 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$I" \
    --results "$R/recipe-id-only" --variants id_only --seeds "${SEEDS[@]}" "${SCHEDULE[@]}"
fi
case "$WHAT" in 2024|2025|2026) ;; *) echo "stages-1/2 seed must be 2024, 2025 or 2026" >&2; exit 2 ;; esac
B=runs/frappe-finalmlp-recipe-llm$WHAT
mkdir -p "$B" && ln -sfn ../frappe-finalmlp/data "$B/data"
# stages 1-2 first (as partB.sh did; frappe_bars then finds them in $B/llm), so they can run beside the ID-only runs
for stage in pretrain embed; do
  nice -n 10 larr train "$stage" --config frappe_finalmlp --data "$B/data" --out "$B/llm" --set seed="$WHAT" \
    --set 'ctr.variants=[larr]' --resume
done
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('$R/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
for s in "${SEEDS[@]}"; do
  [ -e "$I/seed_$s/ctr/id_only/result.json" ] || { echo "no ID-only run of seed $s in $I: run 'recipe.sh id-only' first" >&2; exit 2; }
  mkdir -p "$B/seed_$s/ctr" && ln -sfn "$(realpath "$I/seed_$s/ctr/id_only")" "$B/seed_$s/ctr/id_only"
done
DONE=$(for s in 2021 2022 2023 2024 2025; do if [ -e "$B/seed_$s/ctr/larr/result.json" ]; then echo "$s"; fi; done)
exec nice -n 10 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results "$R/recipe-llm$WHAT" --variants id_only larr --llm-seed "$WHAT" \
  --seeds $(printf '%s\n' $DONE "${SEEDS[@]}" | sort -un) \
  --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN" "${SCHEDULE[@]}"
