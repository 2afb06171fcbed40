"""docs/data.md's "Bring your own data" conversion example runs, and writes a dataset that validates (README's
step 2 links it).

The raw log is made up here: 25 users, 12 shops (one never clicked), 600 rows with shuffled times and a few rows
for a shop ``shops.csv`` lacks (which the example drops)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from larr.data.schema import load_dataset
from larr.serving.server.process import run_triton_server

ROOT = Path(__file__).resolve().parents[2]


def conversion_example() -> str:
    page = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    section = page.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def write_raw_log(root: Path) -> list[dict]:
    rng = np.random.default_rng(5)
    with (root / "shops.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shop", "name", "category", "description"])
        for i in range(12):
            writer.writerow([f"S{100 + i}", f"Shop {i}", ["noodles", "pizza", "tea"][i % 3], ""])
    rows = [
        {"user": f"u{rng.integers(25)}", "shop": f"S{100 + rng.integers(11)}" if n % 50 else "S999",
         "clicked": int(rng.random() < 0.3), "time": int(rng.integers(1_000_000)),
         "weather": ["sunny", "heavy rain", "snow"][rng.integers(3)], "place": ["office", "home"][rng.integers(2)]}
        for n in range(600)
    ]
    with (root / "raw_log.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_the_conversion_example_writes_a_valid_dataset(tmp_path):
    raw = write_raw_log(tmp_path)
    subprocess.run([sys.executable, "-c", conversion_example()], cwd=tmp_path, check=True)
    dataset = load_dataset(tmp_path / "my_data")  # what `larr data validate my_data` checks
    kept = sorted((row for row in raw if row["shop"] != "S999"), key=lambda row: row["time"])
    assert dataset.info.scene_features == ("weather", "place")
    assert dataset.info.num_items == 12 and len(dataset.items) == 12  # the never-clicked shop keeps its row
    assert dataset.info.num_users == len({row["user"] for row in kept})
    assert sum(len(rows) for rows in dataset.splits.values()) == len(kept)
    assert dataset.train.timestamp.max() <= dataset.valid.timestamp.min() <= dataset.test.timestamp.min()
    assert dataset.test.scene[0] == [row["weather"] for row in kept[-len(dataset.test):]]
    assert dataset.test.label.tolist() == [row["clicked"] for row in kept[-len(dataset.test):]]


# docs/data.md trains `--config tiny`; here its stages are cut to seconds (what the test proves is the path, not a model).
SHORT_STAGES = ("pretrain.max_steps=20", "embed.max_steps=5", "ctr.max_epochs=1", "threads=1")


def larr(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "larr", *argv], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"larr {' '.join(argv)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.integration
def test_a_log_of_your_own_is_converted_trained_exported_served_and_queried(tmp_path):
    """docs/data.md's path as a new user runs it, every step on the command line: convert (the example above) ->
    validate -> train (tiny, shorter stages) -> export -> a served repository -> ``larr query`` over gRPC."""
    write_raw_log(tmp_path)
    subprocess.run([sys.executable, "-c", conversion_example()], cwd=tmp_path, check=True)
    larr("data", "validate", "my_data", cwd=tmp_path)
    sets = [arg for item in SHORT_STAGES for arg in ("--set", item)]
    larr("train", "all", "--config", "tiny", "--data", "my_data", "--out", "runs/mine", *sets, cwd=tmp_path)
    repository = tmp_path / "runs" / "mine" / "model_repository"
    larr("export", "--checkpoints", "runs/mine", "--target", "cpu", "--out", str(repository), cwd=tmp_path)

    with run_triton_server(repository) as server:
        answer = larr(
            "query", "--url", server.grpc_url, "--user-id", "0", "--items", "0,1,2",
            "--scene", "weather=light rain", "--scene", "place=office",
            "--model-repository", str(repository), "--json", cwd=tmp_path,
        )
    items = json.loads(answer.stdout)["items"]
    assert sorted(row["item_id"] for row in items) == [0, 1, 2]
    assert all(0.0 < row["ctr"] < 1.0 for row in items)
    names = load_dataset(tmp_path / "my_data").items.name  # what the conversion wrote for ids 0..2
    assert {row["item_id"]: row["name"] for row in items} == {i: names[i] for i in range(3)}
