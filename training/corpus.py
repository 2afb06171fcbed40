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
* optionally (``pretrain.behaviour.records_per_user``), per user a few heterogeneous-behaviour
  records: ``<user>`` + a window of the user's train-split behaviours in time order (a search,
  ``<scene_recent_search>…</scene_recent_search>``, or a click with when and where it happened,
  ``<scene>…</scene><click>…</click>``) + ``</user><emb>`` + the behaviour that came next, so the LM learns how
  what a user searches relates to what they click (and the reverse);
* the dataset's ``knowledge.txt`` lines (general language), if any, repeated ``knowledge_repeats`` times:
  a few hundred lines would otherwise be lost among tens of thousands of records.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from larr.data.schema import Dataset, Interactions, Items
from larr.errors import DataValidationError
from larr.text import EMB_TOKEN, format_click_in_scene, format_item, format_scene, format_scene_feature, format_user, wrap
from larr.training.config import BehaviourConfig

BEHAVIOUR_STREAM = 1  # the behaviour records draw from their own random stream: off, today's corpus is unchanged


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
    behaviour: BehaviourConfig | None = None,
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
    if behaviour is not None and behaviour.records_per_user > 0:
        documents.extend(behaviour_records(dataset, behaviour, seed))
    documents.extend(dataset.knowledge * knowledge_repeats)
    order = rng.permutation(len(documents))
    return [documents[i] for i in order]


def user_behaviours(rows: Interactions, items: Items, features: tuple[str, ...], config: BehaviourConfig) -> dict[int, list[str]]:
    """Each user's behaviours in ``rows`` as texts, in time order (timestamp, then row order): per row the search
    its scene names (``config.search_feature``), then the click, if the row is one."""
    missing = [f for f in (config.search_feature, *config.click_context) if f and f not in features]
    if missing:
        raise DataValidationError(
            f"pretrain.behaviour names scene feature(s) {missing} the dataset lacks (it has {list(features)}); set "
            "pretrain.behaviour.search_feature / click_context to its features ('' for no searches)"
        )
    search = features.index(config.search_feature) if config.search_feature else None
    context = [features.index(f) for f in config.click_context]
    behaviours: dict[int, list[str]] = defaultdict(list)
    for n in np.argsort(rows.timestamp, kind="stable"):
        user = int(rows.user_id[n])
        if search is not None:
            behaviours[user].append(format_scene_feature(config.search_feature, rows.scene[search][n]))
        if rows.label[n] > 0:
            scene = [rows.scene[k][n] for k in context]
            behaviours[user].append(format_click_in_scene(items.name[int(rows.item_id[n])], config.click_context, scene))
    return behaviours


def behaviour_records(dataset: Dataset, config: BehaviourConfig, seed: int) -> list[str]:
    """Up to ``config.records_per_user`` records per user (train split only): ``<user>`` + the ``config.window``
    behaviours before a random position + ``</user><emb>`` + the behaviour at that position."""
    rng = np.random.default_rng((seed, BEHAVIOUR_STREAM))
    behaviours = user_behaviours(dataset.train, dataset.items, dataset.info.scene_features, config)
    records = []
    for user in sorted(behaviours):
        sequence = behaviours[user]
        if len(sequence) < 2:
            continue
        # a target needs at least one behaviour before it: positions 1 .. len - 1
        targets = np.sort(rng.choice(len(sequence) - 1, size=min(config.records_per_user, len(sequence) - 1), replace=False)) + 1
        for t in targets:
            records.append(wrap("user", "".join(sequence[max(0, t - config.window) : t])) + EMB_TOKEN + sequence[t])
    return records
