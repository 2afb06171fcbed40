#!/bin/bash
# PLAN-companions.md row 2: `larr train distill --width-ratio 0.5` from part B's stage-2 embedder (seed 2024), then
# LARR stage 3 on the distilled embedder, seeds 2021-2023, paired with part A's ID-only runs. Resumable: rerun
# after an interruption (a finished distillation is kept).
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
B=runs/frappe-finalmlp-larr/llm              # part B's stages 1-2, seed 2024
D=runs/frappe-finalmlp-distilled
mkdir -p "$D/llm" && ln -sfn ../frappe-finalmlp/data "$D/data"
for stage in pretrain embed; do ln -sfn "$(realpath "$B/$stage")" "$D/llm/$stage"; done
cp "$B/config.yaml" "$D/llm/config.yaml"
if [ ! -e "$D/llm/distill/model" ]; then
  nice -n 15 larr train distill --config frappe_finalmlp --data "$D/data" --out "$D/llm" --width-ratio 0.5 --set seed=2024
fi
read -r SCALE ALIGN < <(python -c "import json; c=json.load(open('benchmarks/studies/frappe/results/frappe-finalmlp/tune.json'))['chosen']; print(c['ctr.llm_input_scale'], c['ctr.align_weight'])")
for s in 2021 2022 2023; do
  mkdir -p "$D/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$D/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$D" \
  --results benchmarks/studies/frappe/results/frappe-finalmlp/distilled --variants id_only larr --seeds 2021 2022 2023 \
  --set ctr.embedder=distilled --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight="$ALIGN"
