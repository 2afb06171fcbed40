"""Choose stage-3 settings of LARR on validation only, before any test number is read (pre-registered plans).

    python benchmarks/studies/frappe/frappe_tune.py --config frappe_finalmlp --llm runs/frappe-finalmlp-larr/llm \\
        --data runs/frappe-finalmlp-larr/data --out runs/frappe-finalmlp-larr/tune --seed 2021 --epochs 4 \\
        --grid ctr.llm_input_scale=0.001,0.01,0.1 --grid ctr.align_weight=0.01,0.1

Every combination of the ``--grid`` values trains ``--variant`` (``larr`` by default, on the frozen stages 1-2 in
``--llm``; ``id_only`` needs no ``--llm``) for ``--epochs`` epochs with ``ctr.read_test`` false (the test split is
never scored), once per stage-3 seed in ``--seeds``; ``OUT/tune.json`` lists each combination's best validation AUC
per seed and their mean, and names the combination with the best mean. Resumable: finished runs are kept.
A training-recipe pilot, e.g.::

    python benchmarks/studies/frappe/frappe_tune.py --config frappe_finalmlp --variant id_only \
        --data runs/frappe-finalmlp/data --out runs/recipe-pilot --seeds 2021 2022 2023 --epochs 30 \
        --grid ctr.lr_decay_patience=1,2 --set ctr.patience=3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import yaml

from larr.errors import ConfigError
from larr.layout import RunLayout, Stage, Variant
from larr.training.config import load_config, parse_overrides

TUNE_FILE = "tune.json"


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["ctr.align_weight=0.01,0.1", ...]`` → ``{"ctr.align_weight": [0.01, 0.1], ...}`` (YAML scalars)."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {item!r}: expected KEY=V1,V2,...")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def combination_name(combo: dict) -> str:
    return "_".join(f"{key.split('.')[-1]}={value}" for key, value in combo.items())


def link_stages(llm: Path, run_dir: Path) -> None:
    """``run_dir/<stage>`` → ``llm/<stage>`` (relative links), as frappe_bars does for its seeds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for target in RunLayout(llm).llm_stage_dirs:
        link = run_dir / target.name
        if target.exists() and not link.exists():
            os.symlink(os.path.relpath(target, run_dir), link, target_is_directory=True)


def run_dir_of(out: Path, combo: dict, seed: int, seeds: list[int]) -> Path:
    """One run folder per combination (and per seed when there are several: ``OUT/<combination>/seed_<s>``)."""
    folder = out / combination_name(combo)
    return folder if len(seeds) == 1 else folder / f"seed_{seed}"


def tune(config_name: str, llm: Path | None, data: Path, out: Path, seeds: list[int], epochs: int,
         grid: dict[str, list], variant: Variant = Variant.LARR, fixed: dict | None = None) -> dict:
    """Train every (combination, seed) with ``fixed`` overrides too; returns (and writes) the tune.json report."""
    from larr.training.cli import run_stage
    from larr.training.ctr import RESULT_FILE

    if variant is not Variant.ID_ONLY and llm is None:
        raise ValueError(f"variant {variant.value} reads frozen stages 1-2: give the run folder holding them (--llm)")
    fixed = fixed or {}
    rows = []
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values))
        per_seed = {}
        for seed in seeds:
            run_dir = run_dir_of(out, combo, seed, seeds)
            result_path = RunLayout(run_dir).ctr_dir(variant) / RESULT_FILE
            if not result_path.exists():
                if llm is not None:
                    link_stages(llm, run_dir)
                overrides = {**fixed, **combo, "data": str(data), "seed": seed, "ctr.max_epochs": epochs,
                             "ctr.read_test": False, "ctr.variants": [variant.value]}
                run_stage(Stage.CTR, load_config(config_name, overrides), run_dir, resume=True)
            result = json.loads(result_path.read_text(encoding="utf-8"))
            assert "auc" not in result, f"{result_path}: a tuning run scored the test split"
            per_seed[seed] = {"best_valid_auc": result["best_valid_auc"], "steps": result["steps"],
                              "valid_auc_by_epoch": [round(epoch["auc"], 5) for epoch in result["history"]]}
        mean = sum(r["best_valid_auc"] for r in per_seed.values()) / len(per_seed)
        row = {"settings": combo, "best_valid_auc": round(mean, 6)}
        if len(seeds) == 1:
            row["steps"] = per_seed[seeds[0]]["steps"]  # the single-seed report keeps its earlier shape
        else:
            row["per_seed"] = {str(seed): r for seed, r in per_seed.items()}
        rows.append(row)
        print(f"{combination_name(combo)}: valid AUC {mean:.4f}", flush=True)
    best = max(rows, key=lambda row: row["best_valid_auc"])
    report = {"config": config_name, "variant": variant.value, "llm": None if llm is None else str(llm),
              **({"seed": seeds[0]} if len(seeds) == 1 else {"seeds": seeds}), "epochs": epochs,
              "fixed": fixed, "grid": grid, "runs": rows, "chosen": best["settings"],
              "note": "validation only: ctr.read_test false, no test number computed"}
    out.mkdir(parents=True, exist_ok=True)
    (out / TUNE_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"chosen: {best['settings']} (valid AUC {best['best_valid_auc']:.4f}) -> {out / TUNE_FILE}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/frappe/frappe_tune.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="frappe_finalmlp", help="training config name or file")
    parser.add_argument("--llm", type=Path, help="run folder holding the trained stages 1-2 (not for id_only)")
    parser.add_argument("--data", required=True, type=Path, help="the converted dataset")
    parser.add_argument("--out", required=True, type=Path, help="one run folder per combination (and seed), and tune.json")
    parser.add_argument("--variant", type=Variant.parse, default=Variant.LARR, help="the stage-3 variant to train")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=[2021],
                        help="stage-3 seeds of every combination; the chosen one has the best mean")
    parser.add_argument("--epochs", type=int, default=4, help="ctr.max_epochs of every combination")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a config key and its values")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override every combination shares")
    args = parser.parse_args(argv)
    if not args.grid:
        parser.error("give at least one --grid KEY=V1,V2,...")
    if args.variant is not Variant.ID_ONLY and args.llm is None:
        parser.error(f"--variant {args.variant.value} reads frozen stages 1-2: give --llm")
    try:
        fixed = parse_overrides(args.set)
    except ConfigError as error:
        parser.error(str(error))
    tune(args.config, args.llm, args.data, args.out, args.seeds, args.epochs, parse_grid(args.grid), args.variant, fixed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
