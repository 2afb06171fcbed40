"""The Frappe cold-start study's numbers (``benchmarks/studies/frappe-cold-start/cold_start_slices.py``): the
two-level gap and its verdict, and a lever step's paired differences, on hand-made results."""

from __future__ import annotations

import math
import statistics

import cold_start_slices as slices
import pytest


def _group(held_out: list[float], everything: list[float]) -> dict:
    gaps = {"all": everything, "held_out": held_out, "seen": everything, "original_test": everything}
    return {"gaps": gaps, "sensitivity": {"3041-larr": {"other_meaning": 0.002, "paraphrase": 0.001}}}


def test_the_interval_is_over_the_groups_mean_gaps() -> None:
    groups = {"group-1": _group([0.004, 0.010], [0.001, 0.001]), "group-2": _group([0.008, 0.008], [0.0, 0.002]),
              "group-3": _group([0.006, 0.006], [0.001, 0.0])}
    summary = slices.summarise(groups)
    means = [0.007, 0.008, 0.006]
    half = 4.302653 * statistics.stdev(means) / math.sqrt(3)  # t(0.975, df 2)
    held = summary["slices"]["held_out"]
    assert held["group_mean_gaps"] == pytest.approx(means)
    assert held["mean"] == pytest.approx(0.007) and held["ci95"] == pytest.approx(half, rel=1e-4)
    assert summary["verdict_met"] is (0.007 >= slices.GOAL_GAP and 0.007 - half > 0)
    assert summary["sensitivity_text_only"]["larr"] == {"mean": 0.002, "runs": 3}
    worse = {**groups, "group-3": _group([-0.01, -0.01], [0.0, 0.0])}
    assert slices.summarise(worse)["verdict_met"] is False


def test_lever_differences_pair_by_stage3_seed() -> None:
    def results(larr: dict, id_only: dict | None = None) -> dict:
        per_seed = {"larr": {s: {"auc": a, "best_valid_auc": v} for s, (a, v) in larr.items()}}
        if id_only:
            per_seed["id_only"] = {s: {"auc": a, "best_valid_auc": v} for s, (a, v) in id_only.items()}
        return {"per_seed": per_seed}
    base = results({"3040": (0.95, 0.98), "4040": (0.96, 0.97)}, {"3040": (0.94, 0.97), "4040": (0.95, 0.97)})
    lever = results({"3040": (0.96, 0.98), "4040": (0.98, 0.96), "5040": (0.99, 0.99)})  # 5040: no pair, left out
    out = slices.lever_differences(base, lever)
    assert out["seeds"] == ["3040", "4040"]
    assert out["held_out_vs_base"]["mean"] == pytest.approx(0.015)
    assert out["valid_vs_base"]["mean"] == pytest.approx(-0.005)
    assert out["held_out_vs_id_only"]["per_seed"] == pytest.approx([0.02, 0.03])
