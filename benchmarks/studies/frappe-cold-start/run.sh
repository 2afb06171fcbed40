#!/bin/bash
# PLAN.md beside this file: the Frappe cold-start study. Every step is resumable (rerun it after an interruption).
#   run.sh group W      a confirmatory group: the cold-start data, stages 1-2 with seed W, stage 3 with seeds W+1000
#                       and W+2000 for id_only and larr, per-row test scores, the scene sensitivity, and
#                       results/group-W/slices.json. Part A: W in 2041..2046, the replication's settings (EXTRA
#                       empty); part C: W in 2051..2056 with EXTRA = the adopted levers. One core each; two groups
#                       can run side by side.
#   run.sh tune STEP    part B, a design-lever step on the tuning split (never the study's test rows): STEP is
#                       base | scale | siddrop | entry | align | corpus, VALUE=... the lever's value, EXTRA the levers
#                       adopted so far, BASE the step it is compared with (default base); prints the differences.
#   run.sh standard W   part C's check on the standard Frappe_x1 split (W in 2051..2056, EXTRA = the adopted levers):
#                       id_only and larr with and without them, same LLM and stage-3 seeds.
#   run.sh summary A|C  with all six groups of the part in: results/summary-A|C/ (the verdict, computed once).
#   run.sh smoke        ~1-3 min end to end at toy size into /tmp/frappe-cold-start-smoke: checks the recipe only.
set -euo pipefail
cd "$(dirname "$0")/../../.."
S=benchmarks/studies/frappe-cold-start
R=$S/results
RAW=${RAW:-../shared/data/frappe}
SPLIT=(--cold-start-share 0.5 --cold-start-fields daytime,weather --cold-start-seed 2024)
TUNING_SEED=2025
# the replication's settings (benchmarks/studies/frappe/results/frappe-finalmlp/scale-tune.json: fixed + chosen)
read -r -a SETTINGS < <(python -c "import json; t=json.load(open('benchmarks/studies/frappe/results/frappe-finalmlp/scale-tune.json'))
print(' '.join(f'--set {k}={v}' for k, v in {**t['fixed'], **t['chosen']}.items()))")
read -r -a EXTRA_SETTINGS <<< "${EXTRA:-}"   # e.g. EXTRA="--set ctr.llm_input_scale=0.1"
bars() { nice -n 10 python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp "$@"; }

convert() {  # OUT [more `larr data frappe` flags]: the cold-start data, once
  local out=$1; shift
  [[ -f "$out/cold_start.json" ]] || python -m larr data frappe --raw "$RAW" --out "$out" --seed 2024 "${SPLIT[@]}" "$@"
}

link() {  # FROM TO: TO is a link to the folder FROM (a later step reusing an earlier one's data or LLM)
  [[ -e "$2" ]] || { mkdir -p "$(dirname "$2")"; ln -s "$(realpath "$1")" "$2"; }
}

scores_and_sensitivity() {  # RUN RESULTS SEED...: per-row test scores and the scene sensitivity of each stage-3 run
  local b=$1 res=$2; shift 2
  mkdir -p "$res"
  for s in "$@"; do
    [[ -f "$b/seed_$s/test_scores.csv" ]] || python -m larr predict --run "$b/seed_$s" --split test --out "$b/seed_$s/test_scores.csv"
    for v in larr id_only; do
      [[ -f "$res/sensitivity-$s-$v.json" ]] || python benchmarks/studies/scene-sensitivity/scene_sensitivity.py \
        --run "$b/seed_$s" --variant "$v" --concepts "$S/frappe_concepts.json" --out "$res/sensitivity-$s-$v.json"
    done
  done
  python "$S/cold_start_slices.py" group --run "$b" --out "$res"
}

case "${1:?usage: run.sh group W | tune STEP | standard W | summary A|C | smoke}" in
  group)
    W=${2:?usage: run.sh group W}
    if [[ "$W" =~ ^204[1-6]$ ]]; then [[ -z "${EXTRA:-}" ]] || { echo "part A runs without EXTRA" >&2; exit 2; }
    elif [[ "$W" =~ ^205[1-6]$ ]]; then [[ -n "${EXTRA:-}" ]] || { echo "part C needs EXTRA (PLAN.md)" >&2; exit 2; }
    else echo "stages-1/2 seed must be in 2041..2046 (part A) or 2051..2056 (part C), PLAN.md" >&2; exit 2; fi
    B=runs/frappe-cold-start-llm$W
    convert "$B/data"
    bars --out "$B" --results "$R/group-$W" --variants id_only larr --llm-seed "$W" --seeds $((W + 1000)) $((W + 2000)) \
      "${SETTINGS[@]}" "${EXTRA_SETTINGS[@]}"
    scores_and_sensitivity "$B" "$R/group-$W" $((W + 1000)) $((W + 2000)) ;;
  tune)
    STEP=${2:?usage: run.sh tune base|scale|siddrop|entry|align|corpus}
    T=runs/frappe-cold-start-tune
    VARIANTS=(larr)
    case "$STEP" in
      base) LEVER=(); VARIANTS=(id_only larr) ;;
      scale) LEVER=(--set ctr.llm_input_scale="${VALUE:?VALUE=0.1 or 0.3}") ;;
      siddrop) LEVER=(--set ctr.scene_id_dropout="${VALUE:?VALUE=0.2 or 0.5}"); VARIANTS=(id_only larr) ;;
      entry) LEVER=(--set ctr.llm_input_norm="${VALUE:?VALUE=the entry mode PLAN.md names}") ;;  # key: as PLAN.md names it once built
      align) LEVER=(--set ctr.align_weight="${VALUE:?VALUE=0.03 or 0.3}") ;;
      corpus) LEVER=(--set pretrain.max_steps=3000 --set pretrain.records_per_user_cap=1000) ;;
      *) echo "unknown step $STEP" >&2; exit 2 ;;
    esac
    NAME=$STEP${VALUE:+-$VALUE}
    B=$T-$NAME
    if [[ "$STEP" == base ]]; then
      convert "$B/data" --cold-start-tuning-seed "$TUNING_SEED"
    else
      [[ -f "$T-base/data/cold_start.json" ]] || { echo "run.sh tune base first" >&2; exit 2; }
      link "$T-base/data" "$B/data"
      [[ "$STEP" == corpus ]] || link "$T-base/llm" "$B/llm"  # stage-3 levers keep the base step's LLM
    fi
    # the tuning split's test rows are train/valid rows of the study's split: its "test" AUC is a tuning number
    bars --out "$B" --results "$R/tune-$NAME" --variants "${VARIANTS[@]}" --llm-seed 2040 --seeds 3040 4040 \
      "${SETTINGS[@]}" "${EXTRA_SETTINGS[@]}" "${LEVER[@]}"
    [[ "$STEP" == base ]] || python "$S/cold_start_slices.py" tune "$R/tune-${BASE:-base}/results.json" "$R/tune-$NAME/results.json" ;;
  standard)
    W=${2:?usage: run.sh standard 2051..2056}
    [[ "$W" =~ ^205[1-6]$ && -n "${EXTRA:-}" ]] || { echo "W in 2051..2056 and EXTRA = the adopted levers" >&2; exit 2; }
    B=runs/frappe-standard-llm$W
    SEEDS=(--llm-seed "$W" --seeds $((W + 1000)) $((W + 2000)))
    bars --out "$B" --results "$R/standard-$W" --variants id_only larr "${SEEDS[@]}" "${SETTINGS[@]}"
    link "$B/data" "$B-adopted/data"; link "$B/llm" "$B-adopted/llm"
    # both arms with the levers (frappe_llm_seeds reads a results file with both; a lever may touch the ID model)
    bars --out "$B-adopted" --results "$R/standard-$W-adopted" --variants id_only larr "${SEEDS[@]}" "${SETTINGS[@]}" \
      "${EXTRA_SETTINGS[@]}" ;;
  summary)
    case "${2:?usage: run.sh summary A|C}" in
      A) python "$S/cold_start_slices.py" summary "$R"/group-204[1-6]/slices.json --out "$R/summary-A" ;;
      C) python "$S/cold_start_slices.py" summary "$R"/group-205[1-6]/slices.json --out "$R/summary-C"
         python benchmarks/studies/frappe/frappe_llm_seeds.py "$R"/standard-205[1-6]-adopted/results.json \
           --against "$R"/standard-205[1-6]/results.json --out "$R/summary-C/standard" ;;
      *) echo "summary A or C" >&2; exit 2 ;;
    esac ;;
  smoke)
    B=/tmp/frappe-cold-start-smoke
    convert "$B/data" --limit-users 20
    python benchmarks/studies/frappe/frappe_bars.py --config frappe_finalmlp --out "$B" --results "$B/results" \
      --variants id_only larr --llm-seed 1 --seeds 2 --limit-users 20 \
      --set pretrain.max_steps=3 --set pretrain.block_size=64 --set embed.max_steps=2 --set embed.batch_size=16 \
      --set embed.max_length=32 --set embed.eval_pairs=50 --set ctr.max_epochs=1 \
      --set "pretrain.model={architecture: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 500}" \
      --set ctr.agg_dim=16 --set ctr.agg_layers=1 --set ctr.agg_heads=2
    scores_and_sensitivity "$B" "$B/results" 2 ;;
  *) echo "usage: run.sh group W | tune STEP | standard W | summary A|C | smoke" >&2; exit 2 ;;
esac
