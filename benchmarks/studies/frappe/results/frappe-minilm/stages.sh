#!/bin/bash
# PLAN.md row (a): all-MiniLM-L6-v2 through stages 1-2-3 on Frappe_x1 (stages 1/2 shortened as on the synthetic
# data: 20 masked-LM steps, 30 contrastive steps at batch 16, learning rate 1e-4), LARR stage 3 on the FinalMLP
# backbone at part B's scale (not re-tuned), stage-3 seeds 2021-2023, paired with part A's ID-only runs. Resumable.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
A=runs/frappe-finalmlp            # part A (ID-only FinalMLP, its converted data)
B=runs/frappe-minilm-stages
mkdir -p "$B" && ln -sfn ../frappe-finalmlp/data "$B/data"
for s in 2021 2022 2023; do
  mkdir -p "$B/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$B/seed_$s/ctr/id_only"
done
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results benchmarks/studies/frappe/results/frappe-minilm/stages --variants id_only larr --seeds 2021 2022 2023 \
  --set pretrain.base_model=minilm --set pretrain.max_steps=20 --set pretrain.warmup_steps=2 \
  --set pretrain.learning_rate=1e-4 --set pretrain.eval_fraction=0.01 \
  --set embed.max_steps=30 --set embed.warmup_steps=3 --set embed.batch_size=16 --set embed.learning_rate=1e-4 \
  --set ctr.llm_input_scale=0.01 --set ctr.align_weight=0.1
