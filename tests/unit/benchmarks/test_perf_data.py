"""``larr perf-data``: perf_analyzer's --input-data file for the larr ensemble, drawn as the benchmarks draw theirs."""

from __future__ import annotations

import json

from larr.benchmarks.workload import RequestStream, ScenePools, WorkloadSpec, perf_analyzer_data
from larr.cli import main
from larr.contract import ITEM_IDS, SCENE_TEXT, USER_ID
from larr.data.schema import load_dataset


def test_perf_data_writes_the_benchmarks_requests(tiny_run, tmp_path, capsys):
    out = tmp_path / "perf" / "data.json"
    argv = ["perf-data", "--data", str(tiny_run.data_dir), "--out", str(out), "--requests", "7", "--candidates", "5",
            "--fresh-share", "0.5", "--seed", "3"]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    written = json.loads(out.read_text(encoding="utf-8"))

    dataset = load_dataset(tiny_run.data_dir, splits=("train",))
    stream = RequestStream(ScenePools.from_dataset(dataset), WorkloadSpec(unseen_share=0.5, candidates=5, seed=3))
    assert written == perf_analyzer_data(stream.take(7))
    features = len(dataset.info.scene_features)
    for entry in written["data"]:
        assert entry[SCENE_TEXT]["shape"] == [features] and len(entry[SCENE_TEXT]["content"]) == features
        assert entry[ITEM_IDS]["shape"] == [5] and len(set(entry[ITEM_IDS]["content"])) == 5
        assert 0 <= entry[USER_ID][0] < dataset.info.num_users


def test_perf_data_refuses_bad_flags_in_one_line(tiny_run, tmp_path, capsys):
    for flag, value in (("--fresh-share", "1.5"), ("--requests", "0"), ("--candidates", "0")):
        argv = ["perf-data", "--data", str(tiny_run.data_dir), "--out", str(tmp_path / "x.json"), flag, value]
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("larr perf-data: ") and "\n" not in error
    assert not (tmp_path / "x.json").exists()
