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

    def add(self, pair: tuple[str, str]) -> None:
        self.left.append(pair[0])
        self.right.append(pair[1])


def _clicks_by_user(rows: Interactions) -> dict[int, list[int]]:
    clicks: dict[int, list[int]] = defaultdict(list)
    for n in np.flatnonzero(rows.label > 0):
        clicks[int(rows.user_id[n])].append(int(n))
    return clicks


@dataclass
class _ClickSource:
    """What the three kinds draw from: one split's clicks and the dataset's item texts."""

    rows: Interactions
    clicks: dict[int, list[int]]  # user -> their clicks' row indices in ``rows``
    users: list[int]  # the users with two clicks or more: the only ones drawn
    names: list[str]  # item id -> name
    items: list[str]  # item id -> item text (training.corpus.item_texts)
    categories: list[str]  # item id -> category
    by_category: dict[str, list[int]]  # category -> its item ids
    features: tuple[str, ...]  # the scene features, in the order of ``rows.scene``

    @classmethod
    def of(cls, dataset: Dataset, split: str) -> _ClickSource:
        rows = dataset.splits[split]
        clicks = _clicks_by_user(rows)
        users = [u for u, c in clicks.items() if len(c) >= 2]
        if not users:
            raise DataValidationError(
                f"split '{split}' has no user with two clicks (label 1); stage 2 builds its user-user pairs from them"
            )
        by_category: dict[str, list[int]] = defaultdict(list)
        for i, category in enumerate(dataset.items.category):
            by_category[category].append(i)
        return cls(rows, clicks, users, dataset.items.name, item_texts(dataset), dataset.items.category, by_category,
                   dataset.info.scene_features)


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
    source = _ClickSource.of(dataset, split)
    out = {kind: Pairs([], []) for kind in PAIR_KINDS}
    for _ in range(count):  # the three kinds take turns on one stream: one pair of each per round
        out["user_item"].add(_user_item_pair(source, history_length, scene_keep, rng))
        out["user_user"].add(_user_user_pair(source, history_length, rng))
        out["item_item"].add(_item_item_pair(source, rng))
    if "item_views" in views:
        out["item_views"] = item_view_pairs(dataset)
    if "persona" in views:
        view_rng = np.random.default_rng((seed, SPLIT_STREAM[split], VIEW_STREAM["persona"]))
        out["persona"] = persona_pairs(dataset, source.rows, source.clicks, source.users, count, history_length,
                                       persona_top_k, persona_recent, view_rng)
    return out


def _user_item_pair(source: _ClickSource, history_length: int, scene_keep: float,
                    rng: np.random.Generator) -> tuple[str, str]:
    """A random click's scene (features kept with probability ``scene_keep``) + its user's other clicked items ↔ the
    clicked item's text."""
    user = source.users[int(rng.integers(len(source.users)))]
    n = source.clicks[user][int(rng.integers(len(source.clicks[user])))]
    left = _scene_text(source, n, scene_keep, rng) + _history_text(source, user, {n}, history_length, rng)
    return left, source.items[int(source.rows.item_id[n])]


def _user_user_pair(source: _ClickSource, history_length: int, rng: np.random.Generator) -> tuple[str, str]:
    """Two disjoint histories of one random user: their clicks shuffled and cut in half."""
    user = source.users[int(rng.integers(len(source.users)))]
    order = rng.permutation(source.clicks[user])
    half = max(1, len(order) // 2)
    first = [source.names[source.rows.item_id[n]] for n in order[:half][:history_length]]
    second = [source.names[source.rows.item_id[n]] for n in order[half:][:history_length]]
    return format_user(first), format_user(second)


def _item_item_pair(source: _ClickSource, rng: np.random.Generator) -> tuple[str, str]:
    """Two items one random user clicked, or (half of the time) the first and an item of its category."""
    user = source.users[int(rng.integers(len(source.users)))]
    a, b = rng.choice(source.clicks[user], size=2, replace=False)
    first_item = int(source.rows.item_id[a])
    if rng.random() < 0.5:
        second_item = int(source.rows.item_id[b])
    else:
        same = source.by_category[source.categories[first_item]]
        second_item = int(same[int(rng.integers(len(same)))])
    return source.items[first_item], source.items[second_item]


def _history_text(source: _ClickSource, user: int, exclude: set[int], history_length: int,
                  rng: np.random.Generator) -> str:
    """A user text: up to ``history_length`` of the user's clicked items (rows not in ``exclude``), in random order."""
    pool = [source.rows.item_id[n] for n in source.clicks[user] if n not in exclude]
    take = rng.choice(len(pool), size=min(history_length, len(pool)), replace=False) if pool else []
    return format_user([source.names[pool[i]] for i in take])


def _scene_text(source: _ClickSource, n: int, scene_keep: float, rng: np.random.Generator) -> str:
    """Row ``n``'s scene, each feature kept with probability ``scene_keep`` (one at random when none is)."""
    features = source.features
    kept = [k for k in range(len(features)) if rng.random() < scene_keep] or [int(rng.integers(len(features)))]
    return wrap("scene", "".join(format_scene_feature(features[k], source.rows.scene[k][n]) for k in kept))


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
