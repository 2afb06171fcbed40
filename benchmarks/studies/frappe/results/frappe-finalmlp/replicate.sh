#!/bin/bash
# PLAN-replicate.md: one group of the confirmatory replication. Stages-1/2 seed W, its own stage-3 seeds W+1000 and
# W+2000, ID-only and LARR on each, all in one run folder on one machine, with scale.sh's settings (the pilot's
# report, scale-tune.json: its fixed settings and chosen scale). Resumable: rerun after an interruption.
#   replicate.sh 2027|2028|...|2034
# Then, with all eight groups in: python benchmarks/studies/frappe/frappe_llm_seeds.py \
#   benchmarks/studies/frappe/results/frappe-finalmlp/replicate-llm20*/results.json --out benchmarks/studies/frappe/results/frappe-finalmlp/replicate-llm-seeds
set -euo pipefail
W=${1:?usage: replicate.sh 2027..2034}
[[ "$W" =~ ^20(2[7-9]|3[0-4])$ ]] || { echo "stages-1/2 seed must be one of 2027..2034 (PLAN-replicate.md)" >&2; exit 2; }
cd "$(dirname "$0")/../../../../.."
R=benchmarks/studies/frappe/results/frappe-finalmlp
B=runs/frappe-finalmlp-replicate-llm$W   # its own data conversion (seconds), LLM and stage-3 runs
read -r -a SETTINGS < <(python -c "import json; t=json.load(open('$R/scale-tune.json'))
print(' '.join(f'--set {k}={v}' for k, v in {**t['fixed'], **t['chosen']}.items()))")
exec nice -n 10 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" \
  --results "$R/replicate-llm$W" --variants id_only larr --llm-seed "$W" --seeds $((W + 1000)) $((W + 2000)) \
  "${SETTINGS[@]}"
