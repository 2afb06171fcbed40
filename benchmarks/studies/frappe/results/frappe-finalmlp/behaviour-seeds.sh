#!/bin/bash
# PLAN-behaviour-seeds.md: stage 1 with behaviour records (PLAN-companions.md row 3's settings) on one of three
# stages-1/2 seeds (2024: row 3's, reused; 2025, 2026: trained here), LARR stage 3 on the given stage-3 seeds,
# paired with part A's ID-only runs. Resumable: rerun after an interruption.
#   behaviour-seeds.sh 2025 2021 2022 2023 2024 2025
# The results file lists every finished stage-3 seed of this stages-1/2 seed, whichever invocation ran it.
set -euo pipefail
LLM_SEED=${1:?usage: behaviour-seeds.sh 2024|2025|2026 STAGE3_SEED...}; shift
cd "$(dirname "$0")/../../../../.."
R=benchmarks/studies/frappe/results/frappe-finalmlp
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
case "$LLM_SEED" in
  2024) H=runs/frappe-finalmlp-behaviour ;;  # row 3's stages 1-2 and stage-3 seeds 2021-2023
  2025|2026) H=runs/frappe-finalmlp-behaviour-llm$LLM_SEED ;;
  *) echo "stages-1/2 seed must be 2024, 2025 or 2026" >&2; exit 2 ;;
esac
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('$R/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
mkdir -p "$H" && ln -sfn ../frappe-finalmlp/data "$H/data"
for s in 2021 2022 2023 2024 2025; do
  mkdir -p "$H/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$H/seed_$s/ctr/id_only"
done
DONE=$(for s in 2021 2022 2023 2024 2025; do if [ -e "$H/seed_$s/ctr/larr/result.json" ]; then echo "$s"; fi; done)
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$H" \
  --results "$R/behaviour-llm$LLM_SEED" --variants id_only larr --llm-seed "$LLM_SEED" \
  --seeds $(printf '%s\n' $DONE "$@" | sort -un) \
  --set pretrain.behaviour.records_per_user=10 --set "pretrain.behaviour.search_feature=''" \
  --set "pretrain.behaviour.click_context=[daytime, weather, city]" \
  --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN"
