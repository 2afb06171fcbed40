"""Stage-1 corpus: recommendation data as text, fields delimited by special tokens.

Three kinds of documents:

* one per item: ``<item><item_name>…</item_name><item_cat>…</item_cat><item_desc>…</item_desc></item>``;
* one per click in the train split: ``<scene>…per-feature tags…</scene><user>…earlier clicks…</user><emb>``
  followed by the clicked item's category and ``<item_name>…</item_name>``, so the LM learns what is
  clicked in which scene.
  The ``<emb>`` token stands where stage 2 pools: predicting the clicked item from it teaches the LM to
  gather the scene's meaning there (without it, the never-seen ``<emb>`` state is nearly constant and
  contrastive tuning collapses). Each record keeps a random subset of the scene features (``scene_keep``),
  so single features, which stage 3 embeds one by one, are meaningful on their own;
* the dataset's ``knowledge.txt`` lines (general language), if any, repeated ``knowledge_repeats`` times:
  a few hundred lines would otherwise be lost among tens of thousands of records.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from larr.data.schema import Dataset
from larr.text import EMB_TOKEN, format_item, format_scene, format_user, wrap


def item_texts(dataset: Dataset) -> list[str]:
    items = dataset.items
    return [format_item(items.name[i], items.category[i], items.description[i]) for i in range(len(items))]


def build_corpus(
    dataset: Dataset,
    seed: int,
    records_per_user_cap: int = 200,
    history_length: int = 3,
    knowledge_repeats: int = 1,
    scene_keep: float = 0.6,
) -> list[str]:
    """Documents for next-token pretraining, in a seeded shuffled order (train split only)."""
    rng = np.random.default_rng(seed)
    documents = list(item_texts(dataset))
    train = dataset.train
    features = dataset.info.scene_features
    items = dataset.items
    history: dict[int, list[str]] = defaultdict(list)
    per_user: dict[int, int] = defaultdict(int)
    for n in np.flatnonzero(train.label > 0):
        user = int(train.user_id[n])
        item = int(train.item_id[n])
        if per_user[user] < records_per_user_cap:
            per_user[user] += 1
            # the category right after <emb>: the <emb> state itself must predict it (a tag in between would
            # make that prediction trivial)
            clicked = items.category[item] + wrap("item_name", items.name[item])
            kept = [k for k in range(len(features)) if rng.random() < scene_keep] or [int(rng.integers(len(features)))]
            scene = format_scene([features[k] for k in kept], [train.scene[k][n] for k in kept])
            documents.append(scene + format_user(history[user][-history_length:]) + EMB_TOKEN + clicked)
        history[user].append(items.name[item])
    documents.extend(dataset.knowledge * knowledge_repeats)
    order = rng.permutation(len(documents))
    return [documents[i] for i in order]
