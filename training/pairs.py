"""Stage-2 positive pairs: user–user, item–item, user–item (our definitions, DESIGN.md §1).

* **user–item**: a user's text — the scene of a click plus the names of other items they clicked —
  and the clicked item's text. Each scene feature is kept with probability ``scene_keep`` so that
  single features (what stage 3 embeds) are meaningful on their own.
* **user–user**: two *different* histories of the same user (disjoint samples of their clicks).
* **item–item**: two items co-clicked by the same user, or (half of the time) of the same category.

Training pairs come from the train split; held-out evaluation pairs from the valid split (user–user,
user–item) and a different seed (item–item).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from larr.data.schema import Dataset, Interactions
from larr.errors import DataValidationError
from larr.text import format_scene_feature, format_user, wrap
from larr.training.corpus import item_texts

PAIR_KINDS = ("user_user", "item_item", "user_item")
SPLIT_STREAM = {"train": 0, "valid": 1, "test": 2}  # independent random streams per split


@dataclass
class Pairs:
    left: list[str]
    right: list[str]

    def __len__(self) -> int:
        return len(self.left)


def _clicks_by_user(rows: Interactions) -> dict[int, list[int]]:
    clicks: dict[int, list[int]] = defaultdict(list)
    for n in np.flatnonzero(rows.label > 0):
        clicks[int(rows.user_id[n])].append(int(n))
    return clicks


def build_pairs(
    dataset: Dataset,
    split: str,
    count: int,
    seed: int,
    history_length: int,
    scene_keep: float = 0.7,
) -> dict[str, Pairs]:
    """``count`` pairs of each kind drawn from ``split`` (seeded)."""
    rng = np.random.default_rng((seed, SPLIT_STREAM[split]))
    rows = dataset.splits[split]
    names = dataset.items.name
    items = item_texts(dataset)
    features = dataset.info.scene_features
    clicks = _clicks_by_user(rows)
    users = [u for u, c in clicks.items() if len(c) >= 2]
    if not users:
        raise DataValidationError(
            f"split '{split}' has no user with two clicks (label 1); stage 2 builds its user-user pairs from them"
        )

    def history(exclude: set[int], user: int) -> str:
        pool = [rows.item_id[n] for n in clicks[user] if n not in exclude]
        take = rng.choice(len(pool), size=min(history_length, len(pool)), replace=False) if pool else []
        return format_user([names[pool[i]] for i in take])

    def scene_text(n: int) -> str:
        kept = [k for k in range(len(features)) if rng.random() < scene_keep] or [int(rng.integers(len(features)))]
        return wrap("scene", "".join(format_scene_feature(features[k], rows.scene[k][n]) for k in kept))

    out = {kind: Pairs([], []) for kind in PAIR_KINDS}
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(dataset.items.category):
        by_category[category].append(i)
    for _ in range(count):
        # user–item
        user = users[int(rng.integers(len(users)))]
        n = clicks[user][int(rng.integers(len(clicks[user])))]
        out["user_item"].left.append(scene_text(n) + history({n}, user))
        out["user_item"].right.append(items[int(rows.item_id[n])])
        # user–user: two disjoint histories
        user = users[int(rng.integers(len(users)))]
        order = rng.permutation(clicks[user])
        half = max(1, len(order) // 2)
        first = [names[rows.item_id[n]] for n in order[:half][:history_length]]
        second = [names[rows.item_id[n]] for n in order[half:][:history_length]]
        out["user_user"].left.append(format_user(first))
        out["user_user"].right.append(format_user(second))
        # item–item
        user = users[int(rng.integers(len(users)))]
        a, b = rng.choice(clicks[user], size=2, replace=False)
        first_item = int(rows.item_id[a])
        if rng.random() < 0.5:
            second_item = int(rows.item_id[b])
        else:
            same = by_category[dataset.items.category[first_item]]
            second_item = int(same[int(rng.integers(len(same)))])
        out["item_item"].left.append(items[first_item])
        out["item_item"].right.append(items[second_item])
    return out
