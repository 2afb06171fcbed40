#!/bin/bash
# The pre-registered plan's part B (PLAN.md), stage-1/2 seed 2024: stages 1-2 -> tuning on validation ->
# LARR stage 3 on 5 seeds paired with part A's ID-only runs. Resumable: rerun after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp            # part A (ID-only FinalMLP, its converted data)
B=runs/frappe-finalmlp-larr       # part B
mkdir -p "$B" && ln -sfn ../frappe-finalmlp/data "$B/data"
nice -n 15 larr train pretrain --config frappe_finalmlp --data "$B/data" --out "$B/llm" --set seed=2024 --resume
nice -n 15 larr train embed --config frappe_finalmlp --data "$B/data" --out "$B/llm" --set seed=2024 --resume
nice -n 15 python benchmarks/studies/frappe/frappe_tune.py --config frappe_finalmlp --llm "$B/llm" --data "$B/data" \
  --out "$B/tune" --seed 2021 --epochs 4 --grid ctr.llm_input_scale=0.001,0.01,0.1 --grid ctr.align_weight=0.01,0.1
cp "$B/tune/tune.json" benchmarks/studies/frappe/results/frappe-finalmlp/tune.json
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('$B/tune/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
for s in 2021 2022 2023 2024 2025; do   # part A's ID-only runs are the pairs
  mkdir -p "$B/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$B/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results benchmarks/studies/frappe/results/frappe-finalmlp/larr --variants id_only larr --seeds 2021 2022 2023 2024 2025 \
  --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN"
