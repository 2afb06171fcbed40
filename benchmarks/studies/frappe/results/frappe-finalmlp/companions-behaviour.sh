#!/bin/bash
# PLAN-companions.md row 3: stage 1 with 10 behaviour records per user (Frappe has no searches: clicks only, each
# with its daytime, weather and city -- the analogues of the synthetic world's time_slot, weather and place),
# stage 2 as part B, both seed 2024; then LARR stage 3 on seeds 2021-2023 paired with part A's ID-only runs.
# Resumable: rerun after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
H=runs/frappe-finalmlp-behaviour
mkdir -p "$H" && ln -sfn ../frappe-finalmlp/data "$H/data"
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('benchmarks/studies/frappe/results/frappe-finalmlp/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
for s in 2021 2022 2023; do
  mkdir -p "$H/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$H/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$H" \
  --results benchmarks/studies/frappe/results/frappe-finalmlp/behaviour --variants id_only larr --seeds 2021 2022 2023 \
  --set pretrain.behaviour.records_per_user=10 --set "pretrain.behaviour.search_feature=''" \
  --set "pretrain.behaviour.click_context=[daytime, weather, city]" \
  --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN"
