"""Frappe cold-start study: test AUC on all rows and on the held-out-value rows, per group, and the pre-registered
summary over groups (PLAN.md beside this file defines every number)::

    # one group: its run folder (data/, seed_<s>/test_scores.csv from `larr predict`) -> RESULTS/group-W/slices.json
    python benchmarks/studies/frappe-cold-start/cold_start_slices.py group --run runs/frappe-cold-start-llm2041 \\
        --out benchmarks/studies/frappe-cold-start/results/group-2041
    # all groups in: the paired LARR − ID-only gaps, the 95 % t-interval over the groups' mean gaps, the verdict
    python benchmarks/studies/frappe-cold-start/cold_start_slices.py summary \\
        benchmarks/studies/frappe-cold-start/results/group-20*/slices.json --out benchmarks/studies/frappe-cold-start/results/summary

Slices of the cold-start test split (``larr.data.cold_start``): ``all`` (every row), ``held_out`` (the rows
``test_marks.csv`` marks: a daytime/weather value no train row has), ``seen`` (the others) and ``original_test``
(the rows of BARS's Frappe_x1 test split, i.e. origin ``test``). ``group`` checks that the marks are exactly the rows
``larr evaluate --held-out-scenes FIELDS`` selects from the dataset, so a user's own log gets the same slice.

A group is one stages-1/2 seed with its stage-3 seeds; its gap on a slice is the mean over its stage-3 seeds of
LARR − ID-only AUC (same stage-3 seed: same batch order). The interval is the t-interval over the groups' mean gaps
(df = groups − 1): it counts the LLM's variance and the stage-3 variance both. The scene sensitivity
(``scene_sensitivity.py --concepts frappe_concepts.json``, text only = ID fields held) is read from
``sensitivity-<seed>-<variant>.json`` beside ``slices.json`` when present.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from larr.benchmarks.summary import mean_ci95
from larr.data.cold_start import REPORT_FILE, read_marks
from larr.data.schema import load_dataset
from larr.training.evaluate import unseen_scene_rows
from larr.training.metrics import ctr_metrics

SCORES_FILE = "test_scores.csv"  # per seed folder: `larr predict --split test --out seed_<s>/test_scores.csv`
SLICES = ("all", "held_out", "seen", "original_test")
ARMS = ("larr", "id_only")
GOAL_GAP = 0.005  # held-out rows: mean paired gap at least this, with the interval's lower end above 0


def _slice_masks(data_dir: Path) -> dict[str, np.ndarray]:
    """Each slice's (N,) mask over the test split; raises when the marks differ from the dataset's unseen rows."""
    marked, origin = read_marks(data_dir)
    fields = tuple(json.loads((data_dir / REPORT_FILE).read_text(encoding="utf-8"))["fields"])
    dataset = load_dataset(data_dir, splits=("train", "test"))
    unseen = unseen_scene_rows(dataset, "test", fields)
    if not np.array_equal(unseen, marked):
        raise ValueError(f"{data_dir}: test_marks.csv marks {int(marked.sum())} rows, {int(unseen.sum())} have a "
                         f"{fields} value absent from train: not the split larr.data.cold_start wrote")
    return {"all": np.ones_like(marked), "held_out": marked, "seen": ~marked,
            "original_test": np.asarray([o == "test" for o in origin])}


def _read_scores(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {name: np.asarray([float(r[name]) for r in rows]) for name in rows[0]} if rows else {}


def group_slices(run: Path) -> dict:
    """``{"seeds": {seed: {arm: {slice: {n, auc, logloss, gauc}}}}, "gaps": {slice: [per seed]}, "slice_rows"}``."""
    masks = _slice_masks(run / "data")
    seeds: dict[str, dict] = {}
    for scores_path in sorted(run.glob(f"seed_*/{SCORES_FILE}")):
        seed = scores_path.parent.name.removeprefix("seed_")
        scores = _read_scores(scores_path)
        if len(scores["row"]) != len(masks["all"]) or not np.array_equal(scores["row"], np.arange(len(masks["all"]))):
            raise ValueError(f"{scores_path}: not one line per test row in order (run `larr predict --split test`)")
        seeds[seed] = {arm: {name: {"n": int(mask.sum()), **ctr_metrics(scores["user_id"][mask].astype(np.int64),
                                                                         scores["label"][mask], scores[arm][mask])}
                             for name, mask in masks.items()} for arm in ARMS if arm in scores}
    gaps = {name: [seeds[s]["larr"][name]["auc"] - seeds[s]["id_only"][name]["auc"] for s in seeds
                   if set(ARMS) <= set(seeds[s])] for name in SLICES}
    return {"run": str(run), "seeds": seeds, "gaps": gaps,
            "slice_rows": {name: int(mask.sum()) for name, mask in masks.items()},
            "sensitivity": {}}


def _sensitivity(folder: Path) -> dict[str, dict]:
    """``{"<seed>-<variant>": {"other_meaning", "paraphrase"}}``: text-only (ID fields held), all features."""
    out = {}
    for path in sorted(folder.glob("sensitivity-*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))["mean_abs_delta_ctr_text_only"]["all"]
        out[path.stem.removeprefix("sensitivity-")] = {k: payload[k] for k in ("other_meaning", "paraphrase")}
    return out


def summarise(groups: dict[str, dict]) -> dict:
    """The verdict over groups (``{group name: group_slices output}``), PLAN.md's rule."""
    per_slice = {}
    for name in SLICES:
        means = [float(np.mean(g["gaps"][name])) for g in groups.values() if g["gaps"][name]]
        mean, half = mean_ci95(means)
        per_slice[name] = {"group_mean_gaps": means, "mean": mean, "ci95": half,
                           "low": None if half is None else mean - half, "high": None if half is None else mean + half}
    held = per_slice["held_out"]
    met = held["low"] is not None and held["mean"] >= GOAL_GAP and held["low"] > 0
    sensitivity = {arm: [v["other_meaning"] for g in groups.values() for k, v in g["sensitivity"].items()
                         if k.endswith(f"-{arm}")] for arm in ARMS}
    return {"groups": sorted(groups), "slices": per_slice, "goal_gap": GOAL_GAP, "verdict_met": met,
            "sensitivity_text_only": {arm: {"mean": float(np.mean(v)) if v else None, "runs": len(v)}
                                      for arm, v in sensitivity.items()}}


def lever_differences(base: dict, lever: dict) -> dict:
    """A tuning step against the base step (two ``frappe_bars`` results.json on the tuning split): per stage-3 seed,
    LARR(lever) − LARR(base) on the tuning split's held-out rows (its "test" AUC) and on its valid split (seen values,
    ``best_valid_auc``), and LARR(lever) − ID-only on the held-out rows — the lever step's own ID-only runs when it
    has them (a lever that changes the ID model too), else the base step's; each with its mean over the seeds."""
    larr, larr_base = lever["per_seed"]["larr"], base["per_seed"]["larr"]
    id_base = lever["per_seed"].get("id_only") or base["per_seed"]["id_only"]
    seeds = sorted(set(larr) & set(larr_base) & set(id_base))
    if not seeds:
        raise ValueError("the lever and base steps share no stage-3 seed")
    rows = {
        "held_out_vs_base": [larr[s]["auc"] - larr_base[s]["auc"] for s in seeds],
        "valid_vs_base": [larr[s]["best_valid_auc"] - larr_base[s]["best_valid_auc"] for s in seeds],
        "held_out_vs_id_only": [larr[s]["auc"] - id_base[s]["auc"] for s in seeds],
    }
    return {"seeds": seeds, **{k: {"per_seed": v, "mean": float(np.mean(v))} for k, v in rows.items()}}


def render(summary: dict) -> str:
    lines = ["# Frappe cold start: LARR − ID-only test AUC by slice", "",
             "Generated by `benchmarks/studies/frappe-cold-start/cold_start_slices.py summary`; rules in PLAN.md.", "",
             f"Groups (stages-1/2 seeds): {', '.join(summary['groups'])}.", "",
             "| slice | mean paired gap | 95 % t-interval over groups | per-group mean gaps |", "|---|---|---|---|"]
    for name, row in summary["slices"].items():
        interval = "–" if row["ci95"] is None else f"[{row['low']:+.4f}, {row['high']:+.4f}]"
        mean = "–" if row["mean"] is None else f"{row['mean']:+.4f}"
        lines.append(f"| {name} | {mean} | {interval} | {', '.join(f'{g:+.4f}' for g in row['group_mean_gaps'])} |")
    for arm, row in summary["sensitivity_text_only"].items():
        if row["mean"] is not None:
            lines.append(f"\nScene sensitivity of `{arm}` (text only, ID fields held; mean |Δ CTR| for another "
                         f"meaning, {row['runs']} runs): {row['mean']:.5f}.")
    verdict = "**met**" if summary["verdict_met"] else "**not met**"
    lines += ["", f"Verdict (held-out rows: mean gap ≥ +{summary['goal_gap']} and the interval above 0): {verdict}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/frappe-cold-start/cold_start_slices.py",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    group = commands.add_parser("group", help="one group's slices.json from its run folder")
    group.add_argument("--run", required=True, type=Path)
    group.add_argument("--out", required=True, type=Path, help="results folder of the group (slices.json goes here)")
    summary = commands.add_parser("summary", help="the verdict over every group's slices.json")
    summary.add_argument("slices", nargs="+", type=Path)
    summary.add_argument("--out", required=True, type=Path)
    tune = commands.add_parser("tune", help="a lever step's paired differences over the base step (tuning split)")
    tune.add_argument("base", type=Path, help="results.json of `run.sh tune base`")
    tune.add_argument("lever", type=Path, help="results.json of the lever step")
    args = parser.parse_args(argv)
    if args.command == "tune":
        result = lever_differences(*(json.loads(p.read_text(encoding="utf-8")) for p in (args.base, args.lever)))
        (args.lever.parent / "lever.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "group":
        result = group_slices(args.run)
        result["sensitivity"] = _sensitivity(args.out)
        (args.out / "slices.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({"gaps": result["gaps"], "slice_rows": result["slice_rows"]}))
        return 0
    groups = {path.parent.name: json.loads(path.read_text(encoding="utf-8")) for path in args.slices}
    report = summarise(groups)
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "summary.md").write_text(render(report), encoding="utf-8")
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
