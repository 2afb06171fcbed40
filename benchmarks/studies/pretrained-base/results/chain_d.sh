#!/bin/bash
# rerun (text_only added) the sensitivity files chain_c wrote with the first version of the script
P="nice -n 10 /work/wt-15-minilm/.venv/bin/python benchmarks/studies/scene-sensitivity/scene_sensitivity.py --rows 2000"
O=/work/c17/minilm/sens
for S in 2024 2025 2026; do $P --run /work/c17/base/s$S --variant larr --out $O/base_s$S.larr.json > $O/base_s$S.larr.log 2>&1; done
$P --run /work/c17/minilm/a_s2024 --variant larr --out $O/a_s2024.larr.json > $O/a_s2024.log 2>&1
$P --run /work/c17/minilm/b_s2024 --variant no_stage2 --out $O/b_s2024.no_stage2.json > $O/b_s2024.log 2>&1
