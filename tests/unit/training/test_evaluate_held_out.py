"""``larr evaluate --held-out-scenes`` / ``--where scene_seen=…``: the rows whose scene values never occur in train,
against an independent computation — on a hand-made dataset, and on the tiny run through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from larr.cli import main
from larr.data.schema import Dataset, DatasetInfo, Interactions, Items
from larr.errors import UsageError
from larr.training.evaluate import Segment, select_rows

FEATURES = ("weather", "place")


def _rows(pairs: list[tuple[str, str]]) -> Interactions:
    n = len(pairs)
    return Interactions(np.arange(n, dtype=np.int64) % 3, np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32),
                        np.full(n, -1), [[p[k] for p in pairs] for k in range(len(FEATURES))])


DATASET = Dataset(
    DatasetInfo("small", FEATURES, 3, 1), Items(["a"], ["c"], [""]),
    {"train": _rows([("rain", "home"), ("sun", "office"), ("sun", "home")]),
     "valid": _rows([("drizzle", "home")]),
     "test": _rows([("rain", "home"), ("drizzle", "home"), ("sun", "park"), ("drizzle", "park"), ("sun", "office")])},
)


def _independent(features: tuple[str, ...]) -> list[int]:
    seen = {f: {DATASET.train.scene[FEATURES.index(f)][n] for n in range(len(DATASET.train))} for f in features}
    test = DATASET.test
    return [n for n in range(len(test)) if any(test.scene[FEATURES.index(f)][n] not in seen[f] for f in features)]


def test_held_out_scene_rows_against_an_independent_computation() -> None:
    assert select_rows(DATASET, "test", Segment(unseen_in=("weather",))).tolist() == _independent(("weather",)) == [1, 3]
    assert select_rows(DATASET, "test", Segment(unseen_in=("place",))).tolist() == _independent(("place",)) == [2, 3]
    every = _independent(FEATURES)
    assert select_rows(DATASET, "test", Segment(unseen_in=())).tolist() == every == [1, 2, 3]
    assert select_rows(DATASET, "test", Segment(where=(("scene_seen", "0"),))).tolist() == every
    assert select_rows(DATASET, "test", Segment(where=(("scene_seen", "1"),))).tolist() == [0, 4]
    both = Segment(where=(("place", "park"),), unseen_in=("weather",))  # the filters combine
    assert select_rows(DATASET, "test", both).tolist() == [3]
    assert select_rows(DATASET, "valid", Segment(unseen_in=("weather",))).tolist() == [0]
    with pytest.raises(UsageError, match="no scene feature"):
        select_rows(DATASET, "test", Segment(unseen_in=("city",)))


def _read(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_larr_evaluate_held_out_scenes_on_the_tiny_run(capsys, tiny_run, tmp_path) -> None:
    features = json.loads((tiny_run.data_dir / "dataset.json").read_text())["scene_features"]
    seen = {f: {row[f] for row in _read(tiny_run.data_dir / "train.csv")} for f in features}
    test = _read(tiny_run.data_dir / "test.csv")
    expected = [i for i, row in enumerate(test) if any(row[f] not in seen[f] for f in features)]
    assert 0 < len(expected) < len(test)  # the synthetic test split holds paraphrases no train row has
    scores = tmp_path / "scores.csv"
    argv = ["evaluate", "--run", str(tiny_run.run_dir), "--variant", "id_only", "--json"]
    assert main([*argv, "--held-out-scenes", "--scores", str(scores)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"]["id_only"]["n"] == len(expected)
    assert [int(row["row"]) for row in _read(scores)] == expected
    assert main([*argv, "--where", "scene_seen=0"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == report["metrics"]
    one = features[0]
    assert main([*argv, "--held-out-scenes", one]) == 0
    only = [i for i, row in enumerate(test) if row[one] not in seen[one]]
    assert json.loads(capsys.readouterr().out)["metrics"]["id_only"]["n"] == len(only)
