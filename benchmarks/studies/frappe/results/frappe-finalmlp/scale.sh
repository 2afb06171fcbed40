#!/bin/bash
# PLAN-scale.md step 2: LARR on FinalMLP with the input scale the pilot chose on validation (scale-tune.json's
# "chosen", adopted by the plan's rule) and PLAN-recipe.md's schedule, on recipe.sh's stages-1/2 models, paired with
# recipe.sh's ID-only runs (run those first). Resumable: rerun after an interruption.
#   scale.sh 2024|2025|2026 [STAGE3_SEED...]   (default stage-3 seeds 2021-2025)
# Then: python benchmarks/studies/frappe/frappe_llm_seeds.py benchmarks/studies/frappe/results/frappe-finalmlp/scale-llm*/results.json \
#         --out benchmarks/studies/frappe/results/frappe-finalmlp/scale-llm-seeds
# and, against the recipe's LARR: ... --against benchmarks/studies/frappe/results/frappe-finalmlp/recipe-llm*/results.json
set -euo pipefail
WHAT=${1:?usage: scale.sh 2024|2025|2026 [STAGE3_SEED...]}; shift
case "$WHAT" in 2024|2025|2026) ;; *) echo "stages-1/2 seed must be 2024, 2025 or 2026" >&2; exit 2 ;; esac
SEEDS=("$@"); [ ${#SEEDS[@]} -gt 0 ] || SEEDS=(2021 2022 2023 2024 2025)
cd "$(dirname "$0")/../../../../.."
R=benchmarks/studies/frappe/results/frappe-finalmlp
I=runs/frappe-finalmlp-recipe                 # recipe.sh's ID-only runs
L=runs/frappe-finalmlp-recipe-llm$WHAT/llm    # recipe.sh's stages 1-2 of this seed
B=runs/frappe-finalmlp-scale-llm$WHAT
[ -e "$L/embed/model" ] || { echo "no stages 1-2 of seed $WHAT in $L: run 'recipe.sh $WHAT' first" >&2; exit 2; }
mkdir -p "$B" && ln -sfn ../frappe-finalmlp/data "$B/data" && ln -sfn "$(realpath "$L")" "$B/llm"
# the adopted scale and the settings the pilot held fixed (align weight, schedule), from the pilot's own report
read -r -a SETTINGS < <(python -c "import json; t=json.load(open('$R/scale-tune.json'))
print(' '.join(f'--set {k}={v}' for k, v in {**t['fixed'], **t['chosen']}.items()))")
for s in "${SEEDS[@]}"; do
  [ -e "$I/seed_$s/ctr/id_only/result.json" ] || { echo "no ID-only run of seed $s in $I: run 'recipe.sh id-only' first" >&2; exit 2; }
  mkdir -p "$B/seed_$s/ctr" && ln -sfn "$(realpath "$I/seed_$s/ctr/id_only")" "$B/seed_$s/ctr/id_only"
done
DONE=$(for s in 2021 2022 2023 2024 2025; do if [ -e "$B/seed_$s/ctr/larr/result.json" ]; then echo "$s"; fi; done)
exec nice -n 10 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results "$R/scale-llm$WHAT" --variants id_only larr --llm-seed "$WHAT" \
  --seeds $(printf '%s\n' $DONE "${SEEDS[@]}" | sort -un) \
  "${SETTINGS[@]}"
