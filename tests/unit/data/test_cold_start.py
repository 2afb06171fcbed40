"""Cold-start scene split on a hand-made Frappe-shaped dataset: no held-out value reaches train/valid, the marks are
exactly the test rows with a held-out value, no row is lost, and the draw depends only on the seed.
The last test runs ``larr data frappe --cold-start-share`` on the real data (skipped without it)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from larr.cli import main
from larr.data.cold_start import (
    MARKS_FILE,
    REPORT_FILE,
    ColdStartSpec,
    cold_start_split,
    configure_cold_start_flags,
    read_marks,
    spec_from_args,
    tuning_split,
    write_cold_start,
)
from larr.data.frappe import SCENE_FEATURES
from larr.data.schema import Dataset, DatasetInfo, Interactions, Items, load_dataset
from larr.errors import UsageError

REAL_DIR = Path(__file__).parents[3].parent / "shared/data/frappe"
# per field: (value, weight); the head values (weight >= 20 of ~100) stay seen at max_value_share 0.1
VALUES = {
    "daytime": [("morning", 30), ("evening", 30), ("night", 25), ("sunrise", 8), ("sunset", 7)],
    "weekday": [("monday", 50), ("sunday", 50)],
    "isweekend": [("workday", 50), ("weekend", 50)],
    "homework": [("unknown", 70), ("home", 20), ("work", 10)],
    "cost": [("free", 90), ("paid", 10)],
    "weather": [("cloudy", 40), ("sunny", 25), ("unknown", 12), ("foggy", 8), ("rainy", 7), ("drizzle", 5),
                ("snowy", 3)],
    "country": [("Spain", 40), ("unknown", 30), ("Peru", 10), ("Chile", 8), ("Malta", 6), ("Latvia", 6)],
    "city": [("unknown city", 60), ("city 7", 40)],
}
SPEC = ColdStartSpec(("daytime", "weather"), share=0.5, seed=7)


def _rows(n: int, rng: np.random.Generator) -> Interactions:
    scene = []
    for feature in SCENE_FEATURES:
        texts, weights = zip(*VALUES[feature])
        scene.append([str(t) for t in rng.choice(texts, size=n, p=np.asarray(weights) / sum(weights))])
    return Interactions(user_id=rng.integers(0, 20, n), item_id=rng.integers(0, 30, n),
                        label=(rng.random(n) < 1 / 3).astype(np.float32), timestamp=np.full(n, -1), scene=scene)


def frappe_like(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    items = Items(name=[f"app {i}" for i in range(30)], category=["Tools"] * 30, description=[""] * 30)
    splits = {"train": _rows(700, rng), "valid": _rows(200, rng), "test": _rows(100, rng)}
    return Dataset(DatasetInfo("frappe", SCENE_FEATURES, 20, 30), items, splits)


def column(rows: Interactions, feature: str) -> list[str]:
    return rows.scene[SCENE_FEATURES.index(feature)]


def all_rows(dataset: Dataset) -> Counter:
    return Counter((int(s.user_id[n]), int(s.item_id[n]), float(s.label[n]), *s.scene_row(n))
                   for s in dataset.splits.values() for n in range(len(s)))


def test_no_held_out_value_in_train_or_valid_and_the_marks_are_exactly_the_rows_with_one() -> None:
    dataset = frappe_like()
    split, report = cold_start_split(dataset, SPEC)
    held = report.held_out
    assert all(held[f] for f in SPEC.fields)
    for name in ("train", "valid"):
        for feature in SPEC.fields:
            assert not set(column(split.splits[name], feature)) & set(held[feature]), (name, feature)
    expected = [[f for f in SPEC.fields if column(split.test, f)[n] in held[f]] for n in range(len(split.test))]
    assert report.marked_fields == expected
    # independently: a marked row is one with a value of the fields that no train row has
    unseen = [any(column(split.test, f)[n] not in set(column(split.train, f)) for f in SPEC.fields)
              for n in range(len(split.test))]
    assert [bool(m) for m in report.marked_fields] == unseen
    assert report.rows["test"]["marked"] == sum(unseen) > 0


def test_rows_move_to_test_and_none_is_lost() -> None:
    dataset = frappe_like()
    split, report = cold_start_split(dataset, SPEC)
    assert all_rows(split) == all_rows(dataset)
    assert report.origin[: len(dataset.test)] == ["test"] * len(dataset.test)  # the original test rows come first
    assert report.origin.count("valid") == report.rows["valid"]["moved_to_test"] == len(dataset.valid) - len(split.valid)
    assert report.origin.count("train") == report.rows["train"]["moved_to_test"] == len(dataset.train) - len(split.train)
    assert report.rows["test"]["after"] == len(split.test) == len(report.origin)
    assert all(report.marked_fields[n] for n, o in enumerate(report.origin) if o != "test")  # moved rows are marked


def test_placeholders_and_head_values_stay_seen() -> None:
    dataset = frappe_like()
    for seed in range(20):
        drawn = cold_start_split(dataset, ColdStartSpec(("daytime", "weather", "country"), 0.5, seed))[1].drawn
        assert set(drawn["daytime"]) <= {"sunrise", "sunset"} and len(drawn["daytime"]) == 1
        assert set(drawn["weather"]) <= {"foggy", "rainy", "drizzle", "snowy"} and len(drawn["weather"]) == 2
        assert "unknown" not in drawn["country"] and "Spain" not in drawn["country"]


def test_the_split_depends_only_on_the_seed() -> None:
    dataset = frappe_like()
    first, report = cold_start_split(dataset, SPEC)
    again, same = cold_start_split(frappe_like(), SPEC)
    assert report.to_json() == same.to_json() and report.marked_fields == same.marked_fields
    assert all_rows(again) == all_rows(first)
    for name in ("train", "valid", "test"):
        assert column(first.splits[name], "weather") == column(again.splits[name], "weather")
        assert np.array_equal(first.splits[name].item_id, again.splits[name].item_id)
    draws = {json.dumps(cold_start_split(dataset, ColdStartSpec(SPEC.fields, 0.5, s))[1].drawn) for s in range(10)}
    assert len(draws) > 1  # the seed does pick the values


def _explicit(train: list[tuple[str, str]], valid: list[tuple[str, str]], test: list[tuple[str, str]]) -> Dataset:
    """(weather, country) rows; the other scene fields constant."""
    def rows(pairs):
        n = len(pairs)
        scene = [[{"weather": w, "country": c}.get(f, "x") for w, c in pairs] for f in SCENE_FEATURES]
        return Interactions(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32),
                            np.full(n, -1), scene)
    items = Items(["a"], ["c"], [""])
    return Dataset(DatasetInfo("frappe", SCENE_FEATURES, 1, 1), items,
                   {"train": rows(train), "valid": rows(valid), "test": rows(test)})


def test_a_value_whose_train_rows_all_moved_is_held_out_too() -> None:
    # "Malta" is a head country (13 of 80 rows) seen in train only with "snowy": when snowy is drawn, Malta vanishes
    # from train, so it is held out too, its valid row moves and its test rows are marked
    head = [("sunny", "Spain")] * 30 + [("cloudy", "Peru")] * 30
    dataset = _explicit(train=head + [("snowy", "Malta")] * 2 + [("snowy", "Spain"), ("sunny", "Chile")],
                        valid=head[:5] + [("sunny", "Malta")], test=[("cloudy", "Malta")] * 10 + [("sunny", "Spain")])
    split, report = cold_start_split(dataset, ColdStartSpec(("weather", "country"), share=0.5, seed=0))
    assert report.drawn == {"weather": ["snowy"], "country": ["Chile"]}
    assert report.vanished == {"weather": [], "country": ["Malta"]}
    assert "Malta" not in column(split.valid, "country") and report.rows["valid"]["moved_to_test"] == 1
    assert report.marked_fields[:11] == [["country"]] * 10 + [[]]


def test_written_split_loads_and_its_marks_read_back(tmp_path: Path) -> None:
    split, report = cold_start_split(frappe_like(), SPEC)
    write_cold_start(tmp_path / "data", split, report)
    loaded = load_dataset(tmp_path / "data")
    assert {s: len(r) for s, r in loaded.splits.items()} == {s: len(r) for s, r in split.splits.items()}
    marked, origin = read_marks(tmp_path / "data")
    assert marked.tolist() == [bool(m) for m in report.marked_fields] and origin == report.origin
    assert json.loads((tmp_path / "data" / REPORT_FILE).read_text())["held_out"] == report.held_out
    assert not (tmp_path / "data.partial").exists()


def test_bad_specs_are_refused() -> None:
    with pytest.raises(UsageError, match="share must be in"):
        ColdStartSpec(("weather",), share=1.0)
    with pytest.raises(UsageError, match="no scene field"):
        cold_start_split(frappe_like(), ColdStartSpec(("rain",), share=0.5))
    with pytest.raises(UsageError, match="cannot lose some and keep some"):
        cold_start_split(frappe_like(), ColdStartSpec(("weekday",), share=0.5))  # two head values, no tail


def test_the_flags() -> None:
    parser = argparse.ArgumentParser()
    configure_cold_start_flags(parser)
    assert spec_from_args(parser.parse_args([])) is None
    spec = spec_from_args(parser.parse_args(["--cold-start-share", "0.5", "--cold-start-fields", "weather, country"]))
    assert spec == ColdStartSpec(("weather", "country"), 0.5, 2024, 0.1)
    with pytest.raises(UsageError, match="--cold-start-seed: only with --cold-start-share"):
        spec_from_args(parser.parse_args(["--cold-start-seed", "3"]))


def test_larr_data_frappe_cold_start_on_the_real_data(tmp_path: Path, capsys) -> None:
    if not (REAL_DIR / "frappe.csv").exists():
        pytest.skip(f"{REAL_DIR} absent (research-only data, never in the repo)")
    out = tmp_path / "cold"
    assert main(["data", "frappe", "--raw", str(REAL_DIR), "--out", str(out), "--limit-users", "80",
                 "--cold-start-share", "0.5", "--cold-start-fields", "daytime,weather"]) == 0
    assert "held out (seed 2024, share 0.5)" in capsys.readouterr().out
    dataset = load_dataset(out)
    report = json.loads((out / REPORT_FILE).read_text())
    for name in ("train", "valid"):
        for feature, values in report["held_out"].items():
            assert not set(column(dataset.splits[name], feature)) & set(values)
    marked, _ = read_marks(out)
    assert (out / MARKS_FILE).exists() and marked.sum() == report["rows"]["test"]["marked"] > 0


def test_the_tuning_split_reads_no_test_row_and_holds_out_other_values() -> None:
    dataset = frappe_like()
    split, report = cold_start_split(dataset, SPEC)
    tuning, inner = tuning_split(split, ColdStartSpec(SPEC.fields, SPEC.share, seed=11))
    test_rows = Counter((int(split.test.user_id[n]), int(split.test.item_id[n]), float(split.test.label[n]),
                         *split.test.scene_row(n)) for n in range(len(split.test)))
    assert all_rows(tuning) == all_rows(split) - test_rows  # train/valid rows only, none lost
    for feature in SPEC.fields:
        assert not set(inner.held_out[feature]) & set(report.held_out[feature])  # the outer values are gone already
    assert all(inner.marked_fields) and len(tuning.test) == inner.rows["test"]["marked"] > 0
