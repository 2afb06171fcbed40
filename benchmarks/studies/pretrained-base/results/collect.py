"""Gather the pretrained-base runs into results.json (test AUC per seed, mean +- std, paired delta vs baseline larr).

    python benchmarks/results/pretrained-base/collect.py --root /work/c17 --out benchmarks/results/pretrained-base/results.json

Reads RUN/metrics.json of the baseline runs (ROOT/base/sS), row (a) (ROOT/minilm/a_sS) and row (b)
(ROOT/minilm/b_sS), and the scene-sensitivity JSONs in ROOT/minilm/sens/. A seed whose run has not finished is
left out and listed under "missing".
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SEEDS = (2024, 2025, 2026)
A_SETS = ("--set pretrain.max_steps=20 --set pretrain.warmup_steps=2 --set pretrain.learning_rate=1e-4 "
          "--set pretrain.eval_fraction=0.01 --set embed.max_steps=30 --set embed.warmup_steps=3 "
          "--set embed.batch_size=16 --set embed.learning_rate=1e-4")
B_SETS = ("--set pretrain.max_steps=0 --set pretrain.eval_fraction=0.01 --set embed.max_steps=0 "
          "--set embed.eval_pairs=20 --set \"ctr.variants=[no_stage2]\"")
TRAIN = "nice -n 10 larr train all --config quick --data /work/c17/data"
# row name -> (run folder pattern, variant read, command)
ROWS = {
    "baseline_larr (tiny from-scratch Llama)": ("base/s{seed}", "larr", f"{TRAIN} --out /work/c17/base/s{{seed}} --set seed={{seed}}"),
    "baseline_id_only": ("base/s{seed}", "id_only", "(same run)"),
    "a_larr_minilm (stages 1-2-3 on all-MiniLM-L6-v2)": (
        "minilm/a_s{seed}", "larr", f"{TRAIN} --out /work/c17/minilm/a_s{{seed}} --base-model minilm --set seed={{seed}} {A_SETS}"),
    "a_id_only (same run; should equal baseline_id_only)": ("minilm/a_s{seed}", "id_only", "(same run)"),
    "b_minilm_frozen_mean_pooled (no stage 1/2: no_stage2 on 0-step stages)": (
        "minilm/b_s{seed}", "no_stage2", f"{TRAIN} --out /work/c17/minilm/b_s{{seed}} --base-model minilm --set seed={{seed}} {B_SETS}"),
}
SENSITIVITY = {
    "baseline_larr (tiny from-scratch Llama)": "base_s{seed}.larr.json",
    "baseline_id_only": "base_s{seed}.id_only.json",
    "a_larr_minilm (stages 1-2-3 on all-MiniLM-L6-v2)": "a_s{seed}.larr.json",
    "b_minilm_frozen_mean_pooled (no stage 1/2: no_stage2 on 0-step stages)": "b_s{seed}.no_stage2.json",
}
SENSITIVITY_COMMAND = "nice -n 10 python -m larr.benchmarks.scene_sensitivity --rows 2000 --run RUN --variant VARIANT --out FILE"


def read_auc(root: Path, pattern: str, variant: str, seed: int) -> float | None:
    path = root / pattern.format(seed=seed) / "metrics.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text()).get("ctr", {}).get(variant)
    return None if row is None else row["auc"]


def summary(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 5), "std": round(statistics.stdev(values), 5) if len(values) > 1 else None,
            "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/c17"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    baseline = {seed: read_auc(args.root, "base/s{seed}", "larr", seed) for seed in SEEDS}
    rows = {}
    for name, (pattern, variant, command) in ROWS.items():
        per_seed = {seed: read_auc(args.root, pattern, variant, seed) for seed in SEEDS}
        done = {seed: auc for seed, auc in per_seed.items() if auc is not None}
        deltas = {seed: round(auc - baseline[seed], 5) for seed, auc in done.items() if baseline[seed] is not None}
        rows[name] = {
            "variant": variant, "command": command,
            "test_auc": {str(seed): auc for seed, auc in done.items()},
            "test_auc_summary": summary(list(done.values())) if done else None,
            "paired_delta_vs_baseline_larr": {str(seed): d for seed, d in deltas.items()},
            "paired_delta_summary": summary(list(deltas.values())) if deltas else None,
            "missing_seeds": [seed for seed in SEEDS if seed not in done],
        }
    sensitivity = {}
    for name, pattern in SENSITIVITY.items():
        for mode, key in (("served", "mean_abs_delta_ctr"), ("text_only", "mean_abs_delta_ctr_text_only")):
            found = {}
            for seed in SEEDS:
                path = args.root / "minilm" / "sens" / pattern.format(seed=seed)
                if path.exists() and key in json.loads(path.read_text()):
                    found[str(seed)] = json.loads(path.read_text())[key]["all"]
            if found:
                sensitivity.setdefault(name, {})[mode] = {
                    "per_seed": found,
                    "paraphrase_mean": round(statistics.mean(v["paraphrase"] for v in found.values()), 5),
                    "other_meaning_mean": round(statistics.mean(v["other_meaning"] for v in found.values()), 5),
                    "ratio_mean": round(statistics.mean(v["ratio"] for v in found.values()), 3),
                }
    out = {"data": "/work/c17/data (larr data synth, seed 2024)", "seeds": list(SEEDS), "test_auc_rows": rows,
           "scene_sensitivity": {"command": SENSITIVITY_COMMAND, "what": "mean |delta CTR| over (request, replacement) "
                                 "pairs, first 2000 test rows, features time_slot/weather/place; served: the replacement "
                                 "reaches the scene ID field and the embedder; text_only: the embedder only", "rows": sensitivity}}
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: (v["test_auc"], v["paired_delta_summary"]) for k, v in rows.items()}, indent=1))
    for k, modes in sensitivity.items():
        for mode, v in modes.items():
            print(k, mode, v["paraphrase_mean"], v["other_meaning_mean"], v["ratio_mean"], sorted(v["per_seed"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
