"""Stage-2 positive pairs: user–user, item–item, user–item (our definitions: docs/method.md).

* **user–item**: a user's text — the scene of a click plus the names of other items they clicked —
  and the clicked item's text. Each scene feature is kept with probability ``scene_keep`` so that
  single features (what stage 3 embeds) are meaningful on their own.
* **user–user**: two *different* histories of the same user (disjoint samples of their clicks).
* **item–item**: two items co-clicked by the same user, or (half of the time) of the same category.

Training pairs come from the train split; held-out evaluation pairs from the valid split (user–user,
user–item) and a different seed (item–item).

Two optional cross-view kinds (after PerCoNet), built only when asked for (``views``), each from its
own random stream so that the three kinds above are the same with or without them:

* **item_views**: an item's name ↔ its description (two views of one item). One pair per item of items.csv (a
  closed catalogue has no held-out items: evaluation ranks the same catalogue), so a batch of distinct pairs
  never holds one item twice as its own negative;
* **persona**: a user's explicit persona — the ``persona_top_k`` categories most frequent among their latest
  ``persona_recent`` clicks of the split, most frequent first (ties by name) — ↔ a history text of that user.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from larr.data.schema import Dataset, Interactions
from larr.errors import DataValidationError
from larr.text import (
    format_item_description_view,
    format_item_name_view,
    format_persona,
    format_scene_feature,
    format_user,
    wrap,
)
from larr.training.corpus import item_texts

PAIR_KINDS = ("user_user", "item_item", "user_item")
VIEW_KINDS = ("item_views", "persona")  # optional, built only when their loss weight is above 0
SPLIT_STREAM = {"train": 0, "valid": 1, "test": 2}  # independent random streams per split
VIEW_STREAM = {"item_views": 10, "persona": 11}  # their own streams: the kinds above do not move when these are on


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
    views: tuple[str, ...] = (),
    persona_top_k: int = 3,
    persona_recent: int = 20,
) -> dict[str, Pairs]:
    """``count`` pairs of each of :data:`PAIR_KINDS` drawn from ``split`` (seeded), plus the :data:`VIEW_KINDS`
    named in ``views``."""
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
    if "item_views" in views:
        out["item_views"] = item_view_pairs(dataset)
    if "persona" in views:
        view_rng = np.random.default_rng((seed, SPLIT_STREAM[split], VIEW_STREAM["persona"]))
        out["persona"] = persona_pairs(dataset, rows, clicks, users, count, history_length, persona_top_k, persona_recent, view_rng)
    return out


def item_view_pairs(dataset: Dataset) -> Pairs:
    """Every item's name view ↔ its description view, in item-id order."""
    items = dataset.items
    return Pairs(
        left=[format_item_name_view(name) for name in items.name],
        right=[format_item_description_view(description) for description in items.description],
    )


def persona_categories(rows: Interactions, user_clicks: list[int], categories: list[str], top_k: int, recent: int) -> list[str]:
    """The ``top_k`` categories most frequent among the user's latest ``recent`` clicks (rows of ``rows``), most
    frequent first, ties by name."""
    latest = sorted(user_clicks, key=lambda n: (rows.timestamp[n], n))[-recent:]
    counts: dict[str, int] = defaultdict(int)
    for n in latest:
        counts[categories[int(rows.item_id[n])]] += 1
    return sorted(counts, key=lambda c: (-counts[c], c))[:top_k]


def persona_pairs(
    dataset: Dataset,
    rows: Interactions,
    clicks: dict[int, list[int]],
    users: list[int],
    count: int,
    history_length: int,
    top_k: int,
    recent: int,
    rng: np.random.Generator,
) -> Pairs:
    """``count`` pairs: a random user's persona text ↔ a random ``history_length`` sample of their clicks."""
    names, categories = dataset.items.name, dataset.items.category
    persona = {u: format_persona(persona_categories(rows, clicks[u], categories, top_k, recent)) for u in users}
    out = Pairs([], [])
    for _ in range(count):
        user = users[int(rng.integers(len(users)))]
        take = rng.choice(clicks[user], size=min(history_length, len(clicks[user])), replace=False)
        out.left.append(persona[user])
        out.right.append(format_user([names[int(rows.item_id[n])] for n in take]))
    return out
