#!/bin/bash
# Default vs --strict-knowledge synthetic data, one run each at the quick settings; seed 2024 (the tiny config's),
# fixed before any test number was seen. Run from the repository root; writes runs/quick_{default,strict}/,
# whose metrics.json files are *.metrics.json here. README "What the LLM has read; the strict variant".
set -e
python -m larr data synth --out runs/data/default
python -m larr data synth --out runs/data/strict --strict-knowledge
for name in default strict; do
  python -m larr train all --config tiny --data runs/data/$name --out runs/quick_$name \
    --set pretrain.max_steps=150 --set embed.max_steps=60 --set ctr.max_epochs=2 --set 'ctr.variants=[larr,id_only]'
done
