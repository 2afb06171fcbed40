#!/bin/bash
L=/work/wt-15-minilm/.venv/bin/larr
for S in 2024 2025 2026; do
  nice -n 10 $L train all --config quick --data /work/c17/data --out /work/c17/minilm/a_s$S --base-model minilm \
   --set seed=$S --set pretrain.max_steps=20 --set pretrain.warmup_steps=2 --set pretrain.learning_rate=1e-4 \
   --set pretrain.eval_fraction=0.01 --set embed.max_steps=30 --set embed.warmup_steps=3 --set embed.batch_size=16 \
   --set embed.learning_rate=1e-4 > /work/c17/minilm/a_s$S.log 2>&1
done
