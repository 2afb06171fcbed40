#!/bin/bash
# PLAN-companions.md row 1: stage 2 with item name <-> description pairs on part B's stage-1 model (seed 2024),
# then LARR stage 3 on seeds 2021-2023 paired with part A's ID-only runs. Resumable: rerun after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
P=runs/frappe-finalmlp-larr/llm/pretrain     # part B's stage 1, seed 2024
C=runs/frappe-finalmlp-item-views
mkdir -p "$C/llm" && ln -sfn ../frappe-finalmlp/data "$C/data" && ln -sfn "$(realpath "$P")" "$C/llm/pretrain"
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('benchmarks/studies/frappe/results/frappe-finalmlp/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
for s in 2021 2022 2023; do
  mkdir -p "$C/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$C/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$C" \
  --results benchmarks/studies/frappe/results/frappe-finalmlp/item-views --variants id_only larr --seeds 2021 2022 2023 \
  --set embed.weight_item_views=1 --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN"
