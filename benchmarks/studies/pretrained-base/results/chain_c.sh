#!/bin/bash
# scene sensitivity, 2000 first test rows, for every finished run (waits for the MiniLM runs' stage 3)
P="nice -n 10 /work/wt-15-minilm/.venv/bin/python benchmarks/studies/scene-sensitivity/scene_sensitivity.py --rows 2000"
O=/work/c17/minilm/sens; mkdir -p $O
done_ctr() { python3 -c "import json,sys; sys.exit(0 if 'ctr' in json.load(open('$1/metrics.json')) else 1)" 2>/dev/null; }
for S in 2024 2025 2026; do $P --run /work/c17/base/s$S --variant larr --out $O/base_s$S.larr.json > $O/base_s$S.larr.log 2>&1; done
$P --run /work/c17/base/s2024 --variant id_only --out $O/base_s2024.id_only.json > $O/base_s2024.id_only.log 2>&1
for S in 2024 2025 2026; do
  until done_ctr /work/c17/minilm/b_s$S; do sleep 20; done
  $P --run /work/c17/minilm/b_s$S --variant no_stage2 --out $O/b_s$S.no_stage2.json > $O/b_s$S.log 2>&1
  until done_ctr /work/c17/minilm/a_s$S; do sleep 20; done
  $P --run /work/c17/minilm/a_s$S --variant larr --out $O/a_s$S.larr.json > $O/a_s$S.log 2>&1
done
