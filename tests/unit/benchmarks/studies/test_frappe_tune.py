"""The validation-only tuner: every combination trains on the frozen stages, none scores the test split, the
chosen one is the best validation AUC, and a rerun reuses what finished."""

from __future__ import annotations

import json

from frappe_tune import TUNE_FILE, parse_grid, tune


def test_parse_grid_reads_yaml_scalars():
    assert parse_grid(["ctr.llm_input_scale=0.001,0.01", "ctr.align_weight=0"]) == {
        "ctr.llm_input_scale": [0.001, 0.01], "ctr.align_weight": [0]}


def test_tune_picks_the_best_validation_auc_without_a_test_number(tiny_run, tmp_path):
    config = str(tiny_run.run_dir / "config.yaml")
    grid = {"ctr.llm_input_scale": [0.01, 1.0]}
    report = tune(config, tiny_run.run_dir, tiny_run.data_dir, tmp_path, seeds=[3], epochs=1, grid=grid)
    assert [row["settings"] for row in report["runs"]] == [{"ctr.llm_input_scale": 0.01}, {"ctr.llm_input_scale": 1.0}]
    best = max(report["runs"], key=lambda row: row["best_valid_auc"])
    assert report["chosen"] == best["settings"]
    for run in tmp_path.glob("*/ctr/larr/result.json"):
        assert "auc" not in json.loads(run.read_text())  # validation only
    assert json.loads((tmp_path / TUNE_FILE).read_text())["chosen"] == report["chosen"]
    # a rerun trains nothing and reports the same
    assert tune(config, tiny_run.run_dir, tiny_run.data_dir, tmp_path, seeds=[3], epochs=1, grid=grid)["runs"] == report["runs"]
