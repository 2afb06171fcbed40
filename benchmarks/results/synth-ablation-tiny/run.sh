#!/bin/bash
# The synthetic ablation table: the tiny config with all six stage-3 variants, one seed (2024, the config's and
# `larr data synth`'s default). Run from the repository root; writes runs/synth-ablation/. Resumable: rerun it.
set -e
[ -f runs/synth-ablation/data/dataset.json ] || python -m larr data synth --out runs/synth-ablation/data
python -m larr train all --config tiny --data runs/synth-ablation/data --out runs/synth-ablation/run --resume
