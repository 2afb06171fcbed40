"""README's "Bring your own data" conversion example runs, and writes a dataset that validates.

The raw log is made up here: 25 users, 12 shops (one never clicked), 600 rows with shuffled times and a few rows
for a shop ``shops.csv`` lacks (which the example drops)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from larr.data.schema import load_dataset

ROOT = Path(__file__).resolve().parents[2]


def conversion_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
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
