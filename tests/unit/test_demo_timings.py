"""``larr demo`` writes each step's wall seconds, the first served answer, the machine and the commit."""

from __future__ import annotations

import argparse
import json

import larr.demo
from larr.demo import DemoClock
from larr.provenance import code_commit


def test_the_timings_file_gives_each_step_the_time_until_the_next(tmp_path, monkeypatch, capsys) -> None:
    now = iter([100.0, 103.5, 160.0, 161.0, 170.25, 200.0])  # 4 steps, the answer, the write
    monkeypatch.setattr(larr.demo.time, "perf_counter", lambda: next(now))
    clock = DemoClock(started=100.0)
    for number, name in enumerate(("data", "training", "export", "serving"), start=1):
        clock.step(number, name, name)
    clock.answered()
    clock.write(tmp_path / "timings.json", argparse.Namespace(config="quick", out="runs/demo", resume=False,
                                                             set=["threads=1"]), bench_status=0)

    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["step_seconds"] == {"data": 3.5, "training": 56.5, "export": 1.0, "serving": 39.0}
    assert timings["first_answer_seconds"] == 70.2  # 170.25 - 100, one decimal
    assert timings["total_seconds"] == 100.0
    assert timings["command"] == "larr demo --config quick --out runs/demo --set threads=1"
    assert timings["code_commit"] == code_commit()
    assert {"name", "cpu_model", "cores"} <= set(timings["machine"])
    assert "[3/6] export  [1:00]" in capsys.readouterr().out
