"""Dataset schema: round trip and validation errors that name file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from larr.data.schema import DataValidationError, load_dataset, write_dataset
from larr.data.synth import SCENE_FEATURES, SynthConfig, generate


@pytest.fixture(scope="module")
def small_world():
    return generate(SynthConfig(num_users=20, shops_per_category=2, train_rows=300, valid_rows=50, test_rows=80, seed=7))


def test_round_trip(tmp_path: Path, small_world):
    write_dataset(tmp_path, small_world)
    loaded = load_dataset(tmp_path)
    assert loaded.info.scene_features == SCENE_FEATURES
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(loaded.splits[split].user_id, small_world.splits[split].user_id)
        np.testing.assert_array_equal(loaded.splits[split].label, small_world.splits[split].label)
        assert loaded.splits[split].scene == small_world.splits[split].scene
    assert loaded.items.name == small_world.items.name
    assert loaded.knowledge == small_world.knowledge


def test_generator_is_seeded(small_world):
    again = generate(SynthConfig(num_users=20, shops_per_category=2, train_rows=300, valid_rows=50, test_rows=80, seed=7))
    assert again.train.scene == small_world.train.scene
    np.testing.assert_array_equal(again.test.label, small_world.test.label)


def test_held_out_paraphrases_only_in_test():
    world = generate(SynthConfig(num_users=20, shops_per_category=2, train_rows=2000, valid_rows=200, test_rows=2000, seed=3))
    weather = SCENE_FEATURES.index("weather")
    seen = set(world.train.scene[weather]) | set(world.valid.scene[weather])
    test_only = set(world.test.scene[weather]) - seen
    assert "downpour" in test_only or "pouring rain" in test_only
    assert "downpour" not in seen and "pouring rain" not in seen
    # ...but the knowledge text (the LLM's stand-in world knowledge) does mention them
    assert any("downpour" in line for line in world.knowledge)


def _corrupt(path: Path, line: int, column: str, value: str) -> None:
    rows = path.read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    fields = rows[line - 1].split(",")
    fields[header.index(column)] = value
    rows[line - 1] = ",".join(fields)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("user_id", "abc", "column 'user_id': 'abc' is not an integer"),
        ("user_id", "999999", "column 'user_id': 999999 is outside [0, 20)"),
        ("item_id", "-1", "column 'item_id': -1 is outside"),
        ("label", "2", "column 'label': '2' is not 0 or 1"),
        ("weather", "", "column 'weather': empty scene text"),
    ],
)
def test_bad_interaction_values_name_file_line_and_column(tmp_path: Path, small_world, column, value, message):
    write_dataset(tmp_path, small_world)
    _corrupt(tmp_path / "train.csv", 5, column, value)
    with pytest.raises(DataValidationError) as error:
        load_dataset(tmp_path)
    assert str(tmp_path / "train.csv") in str(error.value)
    assert "line 5" in str(error.value)
    assert message in str(error.value)


def test_missing_column_and_short_row(tmp_path: Path, small_world):
    write_dataset(tmp_path, small_world)
    path = tmp_path / "valid.csv"
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], rows[1], "1,2"]) + "\n")
    with pytest.raises(DataValidationError, match=r"valid.csv: line 3: 2 fields, the header has 9"):
        load_dataset(tmp_path)
    path.write_text(rows[0].replace("label", "clicked") + "\n" + rows[1] + "\n")
    with pytest.raises(DataValidationError, match=r"valid.csv: line 1: missing column\(s\) \['label'\]"):
        load_dataset(tmp_path)


def test_bad_utf8_and_bad_dataset_json(tmp_path: Path, small_world):
    write_dataset(tmp_path, small_world)
    (tmp_path / "items.csv").write_bytes(b"item_id,name,category,description\n0,caf\xe9,x,y\n")
    with pytest.raises(DataValidationError, match="items.csv: not valid UTF-8"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "scene_features": ["user_id"], "num_users": 1, "num_items": 1}))
    with pytest.raises(DataValidationError, match="clash with id columns"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{nope")
    with pytest.raises(DataValidationError, match="dataset.json: line 1: not valid JSON"):
        load_dataset(tmp_path)


def test_missing_item_rows(tmp_path: Path, small_world):
    write_dataset(tmp_path, small_world)
    rows = (tmp_path / "items.csv").read_text().splitlines()
    (tmp_path / "items.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(DataValidationError, match="item ids have no row"):
        load_dataset(tmp_path)


def _add_column(path: Path, name: str, value: str) -> None:
    rows = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([f"{rows[0]},{name}", *(f"{row},{value}" for row in rows[1:])]) + "\n", encoding="utf-8")


def test_undeclared_columns_are_named_in_a_warning_and_ignored(tmp_path: Path, small_world):
    from larr.errors import DataWarning

    write_dataset(tmp_path, small_world)
    _add_column(tmp_path / "train.csv", "device", "phone")
    _add_column(tmp_path / "items.csv", "price", "9.5")
    with pytest.warns(DataWarning) as caught:
        loaded = load_dataset(tmp_path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("train.csv" in m and "['device']" in m for m in messages)
    assert any("items.csv" in m and "['price']" in m for m in messages)
    assert loaded.train.scene == small_world.train.scene  # the extra column changes nothing


def test_declared_columns_load_without_a_warning(tmp_path: Path, small_world):
    import warnings

    write_dataset(tmp_path, small_world)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(tmp_path)


def test_scene_feature_names_must_be_identifiers(tmp_path: Path, small_world):
    write_dataset(tmp_path, small_world)
    info = json.loads((tmp_path / "dataset.json").read_text())
    info["scene_features"] = ["time of day", *info["scene_features"][1:]]
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataValidationError, match=r"\['time of day'\] are not identifiers .* e\.g\. 'time_of_day'"):
        load_dataset(tmp_path)
