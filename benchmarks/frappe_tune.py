"""Choose stage-3 settings of LARR on validation only, before any test number is read (pre-registered plans).

    python -m larr.benchmarks.frappe_tune --config frappe_finalmlp --llm runs/frappe-finalmlp-larr/llm \\
        --data runs/frappe-finalmlp-larr/data --out runs/frappe-finalmlp-larr/tune --seed 2021 --epochs 4 \\
        --grid ctr.llm_input_scale=0.001,0.01,0.1 --grid ctr.align_weight=0.01,0.1

Every combination of the ``--grid`` values trains the ``larr`` variant for ``--epochs`` epochs with
``ctr.read_test`` false (the test split is never scored), on the frozen stages 1-2 in ``--llm``; ``OUT/tune.json``
lists each combination's best validation AUC and names the best. Resumable: finished combinations are kept.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import yaml

from larr.layout import RunLayout, Stage, Variant
from larr.training.config import load_config

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


def tune(config_name: str, llm: Path, data: Path, out: Path, seed: int, epochs: int, grid: dict[str, list]) -> dict:
    from larr.training.cli import run_stage
    from larr.training.ctr import RESULT_FILE

    rows = []
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values))
        run_dir = out / combination_name(combo)
        result_path = RunLayout(run_dir).ctr_dir(Variant.LARR) / RESULT_FILE
        if not result_path.exists():
            link_stages(llm, run_dir)
            overrides = {**combo, "data": str(data), "seed": seed, "ctr.max_epochs": epochs, "ctr.read_test": False,
                         "ctr.variants": [Variant.LARR.value]}
            run_stage(Stage.CTR, load_config(config_name, overrides), run_dir, resume=True)
        result = json.loads(result_path.read_text(encoding="utf-8"))
        assert "auc" not in result, f"{result_path}: a tuning run scored the test split"
        rows.append({"settings": combo, "best_valid_auc": result["best_valid_auc"], "steps": result["steps"]})
        print(f"{combination_name(combo)}: valid AUC {result['best_valid_auc']:.4f}", flush=True)
    best = max(rows, key=lambda row: row["best_valid_auc"])
    report = {"config": config_name, "llm": str(llm), "seed": seed, "epochs": epochs, "grid": grid, "runs": rows,
              "chosen": best["settings"], "note": "validation only: ctr.read_test false, no test number computed"}
    out.mkdir(parents=True, exist_ok=True)
    (out / TUNE_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"chosen: {best['settings']} (valid AUC {best['best_valid_auc']:.4f}) -> {out / TUNE_FILE}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larr.benchmarks.frappe_tune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="frappe_finalmlp", help="training config name or file")
    parser.add_argument("--llm", required=True, type=Path, help="run folder holding the trained stages 1-2")
    parser.add_argument("--data", required=True, type=Path, help="the converted dataset")
    parser.add_argument("--out", required=True, type=Path, help="one run folder per combination, and tune.json")
    parser.add_argument("--seed", type=int, default=2021, help="stage-3 seed of every combination")
    parser.add_argument("--epochs", type=int, default=4, help="ctr.max_epochs of every combination")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a config key and its values")
    args = parser.parse_args(argv)
    if not args.grid:
        parser.error("give at least one --grid KEY=V1,V2,...")
    tune(args.config, args.llm, args.data, args.out, args.seed, args.epochs, parse_grid(args.grid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
