#!/bin/bash
L=/work/wt-15-minilm/.venv/bin/larr
for S in 2024 2025 2026; do
  nice -n 10 $L train all --config quick --data /work/c17/data --out /work/c17/minilm/b_s$S --base-model minilm \
   --set seed=$S --set pretrain.max_steps=0 --set pretrain.eval_fraction=0.01 --set embed.max_steps=0 \
   --set embed.eval_pairs=20 --set "ctr.variants=[no_stage2]" > /work/c17/minilm/b_s$S.log 2>&1
done
