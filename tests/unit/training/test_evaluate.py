"""``larr evaluate`` on the tiny run: the whole test split repeats training's own test numbers, and a segment's
AUC / logloss / N equal an independent computation from the CSV files and the per-row scores it writes."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from larr.cli import main


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def pairwise_auc(labels: list[int], scores: list[float]) -> float:
    """Share of (positive, negative) pairs ranked right, ties counting one half: the definition, O(P * N)."""
    positives = [s for y, s in zip(labels, scores) if y == 1]
    negatives = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def evaluate_json(capsys, argv: list[str]) -> dict:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_test_split_repeats_the_runs_test_metrics(capsys, tiny_run):
    report = evaluate_json(capsys, ["--run", str(tiny_run.run_dir), "--split", "test"])
    trained = json.loads((tiny_run.run_dir / "metrics.json").read_text())["ctr"]
    test_rows = len(read_csv(tiny_run.data_dir / "test.csv"))
    assert set(report["metrics"]) == {"larr", "id_only"}  # every variant the run trained
    for variant, result in report["metrics"].items():
        assert result["n"] == test_rows
        for metric in ("auc", "logloss", "gauc"):
            assert result[metric] == pytest.approx(trained[variant][metric], abs=1e-4), (variant, metric)


def test_a_scene_segment_against_an_independent_computation(capsys, tiny_run, tmp_path):
    test = read_csv(tiny_run.data_dir / "test.csv")
    weather, _ = Counter(row["weather"] for row in test).most_common(1)[0]
    scores_path = tmp_path / "scores.csv"
    report = evaluate_json(capsys, ["--run", str(tiny_run.run_dir), "--variant", "larr", "--where", f"weather={weather}",
                                    "--scores", str(scores_path)])
    expected_rows = [i for i, row in enumerate(test) if row["weather"] == weather]
    scored = read_csv(scores_path)
    assert [int(row["row"]) for row in scored] == expected_rows
    assert [row["user_id"] for row in scored] == [test[i]["user_id"] for i in expected_rows]
    labels = [int(test[i]["label"]) for i in expected_rows]
    probabilities = [float(row["larr"]) for row in scored]
    result = report["metrics"]["larr"]
    assert result["n"] == len(expected_rows) and result["clicks"] == sum(labels)
    assert result["auc"] == pytest.approx(pairwise_auc(labels, probabilities), abs=2e-5)
    logloss = -sum(math.log(p) if y else math.log(1 - p) for y, p in zip(labels, probabilities)) / len(labels)
    assert result["logloss"] == pytest.approx(logloss, abs=2e-5)


def test_user_segments(capsys, tiny_run, tmp_path):
    test = read_csv(tiny_run.data_dir / "test.csv")
    train_users = {row["user_id"] for row in read_csv(tiny_run.data_dir / "train.csv")}
    users = sorted({row["user_id"] for row in test}, key=int)[::2]
    listed = tmp_path / "users.txt"
    listed.write_text("user_id\n" + "\n".join(users) + "\n")
    argv = ["--run", str(tiny_run.run_dir), "--variant", "id_only"]
    by_file = evaluate_json(capsys, [*argv, "--users", str(listed)])["metrics"]["id_only"]
    assert by_file["n"] == sum(row["user_id"] in users for row in test)
    returning = sum(row["user_id"] in train_users for row in test)
    if returning:
        seen = evaluate_json(capsys, [*argv, "--where", "user_seen=1"])["metrics"]["id_only"]
        assert seen["n"] == returning
    if returning < len(test):
        new = evaluate_json(capsys, [*argv, "--where", "user_seen=0"])["metrics"]["id_only"]
        assert new["n"] == len(test) - returning


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--where", "wather=rain"], "--where wather=rain: no column 'wather'"),
        (["--where", "user_id=seven"], "user_id is an integer column"),
        (["--where", "weather=no such weather"], "no row of the test split matches weather=no such weather"),
        (["--variant", "full_text"], "no trained full_text model"),
    ],
)
def test_bad_segments_and_missing_models_are_one_line_errors(capsys, tiny_run, argv, message):
    assert main(["evaluate", "--run", str(tiny_run.run_dir), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("larr evaluate: ") and message in err[0]


def test_predict_writes_what_evaluate_scores_and_eval_is_evaluate(capsys, tiny_run, tmp_path):
    """``larr predict`` writes the rows ``larr evaluate --scores`` writes; ``larr eval`` is the same command."""
    test = read_csv(tiny_run.data_dir / "test.csv")
    weather, _ = Counter(row["weather"] for row in test).most_common(1)[0]
    selection = ["--run", str(tiny_run.run_dir), "--where", f"weather={weather}"]
    assert main(["predict", *selection, "--out", str(tmp_path / "predicted.csv")]) == 0
    assert "wrote" in capsys.readouterr().out
    report = evaluate_json(capsys, [*selection, "--scores", str(tmp_path / "scored.csv")])
    predicted = read_csv(tmp_path / "predicted.csv")
    assert predicted == read_csv(tmp_path / "scored.csv")
    assert [int(row["row"]) for row in predicted] == [i for i, row in enumerate(test) if row["weather"] == weather]
    labels = [int(row["label"]) for row in predicted]
    for variant in ("larr", "id_only"):
        auc = pairwise_auc(labels, [float(row[variant]) for row in predicted])
        assert report["metrics"][variant]["auc"] == pytest.approx(auc, abs=2e-5)
    assert main(["eval", *selection, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == report["metrics"]
