"""training.runner.run_stage: metrics.json gets the stage's results and its wall time, summed over resumes."""

from __future__ import annotations

import json

from larr.layout import RunLayout, Stage
from larr.training.config import load_config
from larr.training.runner import run_stage


def test_a_resumed_stage_adds_its_time_to_the_finished_runs_and_a_fresh_run_does_not(tmp_path, monkeypatch):
    clock = iter([100.0, 160.0, 500.0, 502.5, 900.0, 930.0])  # perf_counter: start, end of each call
    monkeypatch.setattr("larr.training.runner.time.perf_counter", lambda: next(clock))
    config = load_config("tiny", {"threads": 0})

    def train(config, out, resume):
        return {"steps": 10}

    def recorded() -> float:
        return json.loads(RunLayout(tmp_path).metrics_file.read_text())["pretrain"]["wall_seconds"]

    run_stage(Stage.PRETRAIN, train, config, tmp_path, resume=True)  # nothing recorded before: 60 s
    assert recorded() == 60.0
    run_stage(Stage.PRETRAIN, train, config, tmp_path, resume=True)  # a rerun of the finished stage: +2.5 s
    assert recorded() == 62.5
    run_stage(Stage.PRETRAIN, train, config, tmp_path, resume=False)  # from scratch: its own 30 s only
    assert recorded() == 30.0
