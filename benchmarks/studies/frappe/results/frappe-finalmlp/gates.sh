#!/bin/bash
# PLAN-gates.md: FinalMLP's gates read LARR's scene (ctr.backbone.fs_dense). Step 0 chooses llm_input_scale on
# validation only (gates/tune.json, once); then LARR stage 3 on seeds 2021-2023 on part B's stages 1-2 (no argument)
# or the behaviour-records stages 1-2 (`gates.sh behaviour`), paired with part A's ID-only runs.
# Resumable: rerun after an interruption.
set -euo pipefail
LLM=${1:-partB}
cd "$(dirname "$0")/../../../../.."
R=benchmarks/studies/frappe/results/frappe-finalmlp
A=runs/frappe-finalmlp                       # part A (ID-only FinalMLP, its converted data)
case "$LLM" in
  partB) L=runs/frappe-finalmlp-larr/llm; G=runs/frappe-finalmlp-gates; OUT=$R/gates ;;
  behaviour) L=runs/frappe-finalmlp-behaviour/llm; G=runs/frappe-finalmlp-gates-behaviour; OUT=$R/gates-behaviour ;;
  *) echo "usage: gates.sh [partB|behaviour]" >&2; exit 2 ;;
esac
if [ ! -e "$R/gates/tune.json" ]; then
  nice -n 15 python benchmarks/studies/frappe/frappe_tune.py --config frappe_finalmlp --llm runs/frappe-finalmlp-larr/llm \
    --data "$A/data" --out runs/frappe-finalmlp-gates-tune --seed 2021 --epochs 4 \
    --grid ctr.backbone.fs_dense=true --grid ctr.llm_input_scale=0.01,0.1 --grid ctr.align_weight=0.1
  mkdir -p "$R/gates" && cp runs/frappe-finalmlp-gates-tune/tune.json "$R/gates/tune.json"
fi
# the plan's tie rule: equal to 4 decimals goes to 0.01 (part B's scale)
SCALE=$(python - "$R/gates/tune.json" <<'PY'
import json, sys
runs = {r["settings"]["ctr.llm_input_scale"]: round(r["best_valid_auc"], 4) for r in json.load(open(sys.argv[1]))["runs"]}
print(0.1 if runs[0.1] > runs[0.01] else 0.01)
PY
)
mkdir -p "$G/llm" && ln -sfn ../frappe-finalmlp/data "$G/data"
for stage in pretrain embed; do ln -sfn "$(realpath "$L/$stage")" "$G/llm/$stage"; done
cp "$L/config.yaml" "$G/llm/config.yaml"
for s in 2021 2022 2023; do
  mkdir -p "$G/seed_$s/ctr" && ln -sfn "$(realpath "$A/seed_$s/ctr/id_only")" "$G/seed_$s/ctr/id_only"
done
EXTRA=()
if [ "$LLM" = behaviour ]; then  # the behaviour row's stage-1 settings, so the pinned set-up names its LLM
  EXTRA=(--set pretrain.behaviour.records_per_user=10 --set "pretrain.behaviour.search_feature=''"
         --set "pretrain.behaviour.click_context=[daytime, weather, city]")
fi
nice -n 15 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$G" \
  --results "$OUT" --variants id_only larr --seeds 2021 2022 2023 "${EXTRA[@]}" \
  --set ctr.backbone.fs_dense=true --set ctr.llm_input_scale="$SCALE" --set ctr.align_weight=0.1
