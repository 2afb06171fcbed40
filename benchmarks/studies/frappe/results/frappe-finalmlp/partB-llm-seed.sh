#!/bin/bash
# The pre-registered plan's part B (PLAN.md) for one more stages-1/2 seed (2025 or 2026): frappe_bars trains
# stages 1-2 with that seed (--llm-seed; stage 3 replaces it per stage-3 seed) into OUT/llm, then LARR stage 3 on
# the 5 stage-3 seeds, paired with part A's ID-only runs, at the hyperparameters tuning chose with stages-1/2 seed
# 2024 (tune.json; not re-tuned per seed). Resumable: rerun after an interruption.
# Then: python benchmarks/studies/frappe/frappe_llm_seeds.py benchmarks/studies/frappe/results/frappe-finalmlp/larr*/results.json \
#         --out benchmarks/studies/frappe/results/frappe-finalmlp/llm-seeds
set -euo pipefail
LLM_SEED=${1:?usage: partB-llm-seed.sh 2025|2026}
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
B=runs/frappe-finalmlp-larr-llm$LLM_SEED     # this stages-1/2 seed
mkdir -p "$B" && ln -sfn ../frappe-finalmlp/data "$B/data"
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('benchmarks/studies/frappe/results/frappe-finalmlp/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
for s in 2021 2022 2023 2024 2025; do
  mkdir -p "$B/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$B/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results "benchmarks/studies/frappe/results/frappe-finalmlp/larr-llm$LLM_SEED" --variants id_only larr \
  --seeds 2021 2022 2023 2024 2025 --llm-seed "$LLM_SEED" \
  --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN"
