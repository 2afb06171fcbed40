#!/bin/bash
# PLAN.md row (b): MiniLM frozen on Frappe_x1, FinalMLP backbone, paired with part A's ID-only runs. Resumable.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp            # part A (ID-only FinalMLP, its converted data)
B=runs/frappe-minilm-frozen
mkdir -p "$B" && ln -sfn ../frappe-finalmlp/data "$B/data"
for s in 2021 2022 2023; do
  mkdir -p "$B/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$B/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results benchmarks/studies/frappe/results/frappe-minilm/frozen --variants id_only no_stage2 --seeds 2021 2022 2023 \
  --set pretrain.base_model=minilm --set pretrain.max_steps=0 --set pretrain.eval_fraction=0.01 \
  --set embed.max_steps=0 --set embed.eval_pairs=20 --set ctr.llm_input_scale=0.01 --set ctr.align_weight=0.1
