"""A seeded synthetic food-delivery world whose clicks depend on what the scene *means*.

``larr data synth --out DIR`` writes it in the project schema (see :mod:`larr.data.schema`).

The world
---------
* **Shops** (items) belong to one of 12 categories; each category carries *traits* ("hot", "cold",
  "morning", "late", "group", "healthy", …). Names and descriptions are generated from the category
  and its traits ("steaming bowls that warm you up on a cold or rainy day").
* **Scenes** have K = 5 features — ``time_slot``, ``weather``, ``place``, ``recent_search``,
  ``recent_clicks`` — each drawn as a latent *concept* (e.g. weather = rain) and written as one of
  several paraphrases ("downpour", "heavy rain", "rainy evening"). Each concept keeps two paraphrases
  out of train/valid; in the test split a feature uses a held-out paraphrase with probability
  ``unseen_paraphrase_rate``, so a model has to understand the text, not memorise the string.
  ``recent_clicks`` names 1–2 shops the user just looked at.
* **Clicks**: ``logit = bias + taste[user, category] + <u_user, v_shop> + quality[shop]
  + scene_strength * Σ_features trait_weight(concept, shop traits)
  + search_bonus * [searched category == shop category] + click_bonus * [recently clicked category]``.
  The scene term needs the *meaning* of the concept; ID-only models see opaque strings.
* **knowledge.txt** stands in for what a pretrained LLM already knows about the world (a tiny model
  trained from scratch knows nothing): plain sentences that relate every paraphrase — including the
  held-out ones — to its meaning ("a downpour means rainy weather; people want hot soup"). It carries
  no user, click or label information, but its "people often want" sentences are derived from the same
  trait weights that generate the clicks, and it goes into the stage-1 corpus. So by default the LLM has
  read every held-out paraphrase before stage 3 — a stand-in for a pretrained LLM's world knowledge.
  ``strict_knowledge`` leaves the held-out paraphrases and search queries out of it (every other output
  byte-identical), so the test split's held-out strings are ones no stage has read.
* **Long histories** (``history_length`` > 0, off by default): every user gets that many past choices in
  ``history.csv``, each made in a context (``time_slot``, ``weather``, ``place`` concepts). The 125 contexts
  fall into ``history_prototypes`` hidden prototypes, and a user's taste gains a context-dependent part
  ``context_taste[user, prototype, category]`` (a shared per-prototype mean + a per-user deviation). It drives
  the history's choices and adds a term to every click logit, so a user's history says most about a request
  when read by the request's context. ``context_lexicon.csv`` maps every paraphrase (held-out ones included,
  like knowledge.txt) to its concept. Everything it draws comes from its own stream (seed, 17); with it off
  every output is byte-identical to before, and with it on only the labels (and the two new files) change.

:func:`held_out_share` measures how often the test split really uses a held-out text, per feature. The world's words
(categories, traits, paraphrases, queries, glosses) live in :mod:`larr.data.synth_vocabulary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from larr.data.schema import Dataset, DatasetInfo, History, Interactions, Items
from larr.data.synth_vocabulary import (
    CATEGORIES,
    CATEGORY_NOUNS,
    CONCEPT_GLOSS,
    NAME_PREFIXES,
    SCENE_CONCEPTS,
    SEARCH_QUERIES,
    TRAIT_PHRASES,
    TRAIT_WANTS,
)

SCENE_FEATURES = ("time_slot", "weather", "place", "recent_search", "recent_clicks")
HISTORY_CONTEXT = ("time_slot", "weather", "place")  # the scene features a history event records
HISTORY_STREAM = 17  # the history's random stream is default_rng((seed, HISTORY_STREAM))


@dataclass
class SynthConfig:
    """Size and difficulty of the synthetic world."""

    seed: int = field(default=2024, metadata={"help": "everything below is drawn from this seed"})
    num_users: int = field(default=400, metadata={"help": "users"})
    shops_per_category: int = field(default=16, metadata={"help": "shops (items) per each of the 12 categories"})
    train_rows: int = field(default=60_000, metadata={"help": "impressions in train.csv"})
    valid_rows: int = field(default=10_000, metadata={"help": "impressions in valid.csv"})
    test_rows: int = field(default=12_000, metadata={"help": "impressions in test.csv"})
    unseen_paraphrase_rate: float = field(
        default=0.5, metadata={"help": "test only: chance a feature is written with a held-out paraphrase"}
    )
    held_out_per_concept: int = field(default=2, metadata={"help": "paraphrases per concept kept out of train"})
    strict_knowledge: bool = field(
        default=False,
        metadata={"help": "knowledge.txt leaves out the held-out paraphrases too (default: it glosses every one)"},
    )
    scene_strength: float = field(default=1.0, metadata={"help": "scale of the scene-semantics click term"})
    search_bonus: float = field(default=2.0, metadata={"help": "logit bonus: shop in the searched category"})
    click_bonus: float = field(default=1.0, metadata={"help": "logit bonus: shop in a recently clicked category"})
    taste_scale: float = field(default=1.0, metadata={"help": "std of user x category taste"})
    latent_scale: float = field(default=0.5, metadata={"help": "scale of the user x shop latent affinity"})
    bias: float = field(default=-2.6, metadata={"help": "global logit bias (sets the click rate)"})
    favorite_exposure: float = field(
        default=0.4, metadata={"help": "share of impressions drawn from the user's favourite shops (a candidate generator's bias)"}
    )
    favorites_per_user: int = field(default=12, metadata={"help": "size of each user's favourite-shop pool"})
    history_length: int = field(
        default=0, metadata={"help": "past choices per user in history.csv, with context-dependent taste (0: none)"}
    )
    history_prototypes: int = field(default=4, metadata={"help": "hidden context prototypes the context taste depends on"})
    prototype_taste_scale: float = field(
        default=3.0,
        metadata={"help": "std of the shared prototype x category taste (3: k-medoids on the JS matrix recovers the prototypes)"},
    )
    context_taste_scale: float = field(default=1.0, metadata={"help": "std of the user x prototype x category taste"})


@dataclass
class _World:
    shop_category: np.ndarray  # (I,) category index
    names: list[str]
    descriptions: list[str]
    taste: np.ndarray  # (U, C)
    user_latent: np.ndarray  # (U, 8)
    shop_latent: np.ndarray  # (I, 8)
    quality: np.ndarray  # (I,)
    trait_matrix: np.ndarray  # (C, T) 0/1


def _build_world(config: SynthConfig, rng: np.random.Generator) -> _World:
    categories = list(CATEGORIES)
    traits = list(TRAIT_PHRASES)
    trait_matrix = np.array([[t in CATEGORIES[c] for t in traits] for c in categories], dtype=np.float64)
    names, descriptions, shop_category = [], [], []
    used = set()
    for c, category in enumerate(categories):
        for _ in range(config.shops_per_category):
            while True:
                name = f"{rng.choice(NAME_PREFIXES)} {rng.choice(CATEGORY_NOUNS[category])}"
                if name not in used:
                    break
                name = f"{name} {int(rng.integers(2, 99))}"
                if name not in used:
                    break
            used.add(name)
            phrases = [str(rng.choice(TRAIT_PHRASES[t])) for t in CATEGORIES[category]]
            rng.shuffle(phrases)
            descriptions.append(f"{category} shop: " + "; ".join(phrases) + ".")
            names.append(name)
            shop_category.append(c)
    num_items = len(names)
    return _World(
        shop_category=np.asarray(shop_category),
        names=names,
        descriptions=descriptions,
        taste=rng.normal(0.0, config.taste_scale, size=(config.num_users, len(categories))),
        user_latent=rng.normal(0.0, 1.0, size=(config.num_users, 8)) / np.sqrt(8),
        shop_latent=rng.normal(0.0, 1.0, size=(num_items, 8)),
        quality=rng.normal(0.0, 0.4, size=num_items),
        trait_matrix=trait_matrix,
    )


@dataclass
class _ContextTaste:
    """The long-history world's hidden part: which prototype each context is, and the taste it implies."""

    prototype: np.ndarray  # (5, 5, 5) prototype of each (time_slot, weather, place) concept triple
    taste: np.ndarray  # (U, P, C) user x prototype x category logit term

    def term(self, users: np.ndarray, concepts: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """(N,) users, (N, 3) concept indices of HISTORY_CONTEXT, (N,) categories -> (N,) logit term."""
        prototypes = self.prototype[concepts[:, 0], concepts[:, 1], concepts[:, 2]]
        return self.taste[users, prototypes, categories]


def _context_taste(config: SynthConfig, rng: np.random.Generator) -> _ContextTaste:
    shape = tuple(len(SCENE_CONCEPTS[f]) for f in HISTORY_CONTEXT)
    # every prototype gets at least one context, the rest at random
    prototype = rng.permutation(np.resize(np.arange(config.history_prototypes), int(np.prod(shape)))).reshape(shape)
    shared = rng.normal(0.0, config.prototype_taste_scale, size=(config.history_prototypes, len(CATEGORIES)))
    own = rng.normal(0.0, config.context_taste_scale, size=(config.num_users, config.history_prototypes, len(CATEGORIES)))
    return _ContextTaste(prototype=prototype, taste=shared[None] + own)


def _history(config: SynthConfig, world: "_World", context: _ContextTaste, rng: np.random.Generator) -> History:
    """``history_length`` past choices per user: a uniform context, then a shop by softmax over the utility
    taste + context taste + the context's scene effect + latent affinity + quality (Gumbel-max)."""
    effects = _concept_category_effect()
    users = np.repeat(np.arange(config.num_users), config.history_length)  # (H,)
    concepts = np.stack([rng.integers(len(SCENE_CONCEPTS[f]), size=len(users)) for f in HISTORY_CONTEXT], axis=1)  # (H, 3)
    categories = world.shop_category  # (I,)
    prototypes = context.prototype[concepts[:, 0], concepts[:, 1], concepts[:, 2]]  # (H,)
    scene = sum(effects[f][concepts[:, k]] for k, f in enumerate(HISTORY_CONTEXT))  # (H, C)
    utility = (
        world.taste[users][:, categories]
        + context.taste[users, prototypes][:, categories]
        + config.scene_strength * scene[:, categories]
        + config.latent_scale * world.user_latent[users] @ world.shop_latent.T
        + world.quality
    )  # (H, I)
    chosen = np.argmax(utility + rng.gumbel(size=utility.shape), axis=1)
    names = [list(SCENE_CONCEPTS[f]) for f in HISTORY_CONTEXT]
    lexicon = {
        (feature, text): concept
        for feature in HISTORY_CONTEXT
        for concept, (_, options) in SCENE_CONCEPTS[feature].items()
        for text in options
    }
    return History(
        user_id=users.astype(np.int64),
        position=np.tile(np.arange(config.history_length), config.num_users).astype(np.int64),
        item_id=chosen.astype(np.int64),
        context_features=HISTORY_CONTEXT,
        context=[[names[k][c] for c in concepts[:, k]] for k in range(len(HISTORY_CONTEXT))],
        lexicon=lexicon,
    )


def _concept_category_effect() -> dict[str, np.ndarray]:
    """feature -> (num_concepts, C) logit effect of each concept on each category."""
    traits = list(TRAIT_PHRASES)
    effects = {}
    for feature, concepts in SCENE_CONCEPTS.items():
        rows = []
        for weights, _ in concepts.values():
            trait_weights = np.array([weights.get(t, 0.0) for t in traits])
            rows.append(np.array([[t in CATEGORIES[c] for t in traits] for c in CATEGORIES], float) @ trait_weights)
        effects[feature] = np.stack(rows)
    return effects


def held_out_texts(held_out_per_concept: int) -> dict[str, frozenset[str]]:
    """feature -> the texts train and valid never use (the last ``held_out_per_concept`` options of every
    concept or searched category); ``recent_clicks`` names shops and has none."""

    def tail(options: tuple[str, ...]) -> tuple[str, ...]:
        return options[len(options) - held_out_per_concept :]

    held = {
        feature: frozenset(p for _, options in concepts.values() for p in tail(options))
        for feature, concepts in SCENE_CONCEPTS.items()
    }
    held["recent_search"] = frozenset(q for queries in SEARCH_QUERIES.values() for q in tail(queries))
    held["recent_clicks"] = frozenset()
    return held


def held_out_share(rows: Interactions, held_out_per_concept: int) -> dict[str, float]:
    """feature -> share of ``rows`` whose text for it is a held-out one (the test split's real unseen rate)."""
    held = held_out_texts(held_out_per_concept)
    return {feature: float(np.mean([t in held[feature] for t in rows.scene[k]])) for k, feature in enumerate(SCENE_FEATURES)}


def _paraphrase(options: tuple[str, ...], held_out: int, use_held_out: bool, rng: np.random.Generator) -> str:
    pool = options[-held_out:] if use_held_out else options[: len(options) - held_out]
    return str(rng.choice(pool))


def _sample_split(
    rows: int, unseen_rate: float, world: _World, config: SynthConfig, rng: np.random.Generator,
    context: _ContextTaste | None = None,
) -> Interactions:
    """``rows`` impressions (user, shop, scene) and their clicks: per row, every draw of its scene in turn
    (:func:`_impression`), then the labels of all rows at once."""
    effects = _concept_category_effect()
    users, items = _impressions(rows, world, config, rng)  # (N,), (N,)
    scene: list[list[str]] = [[] for _ in SCENE_FEATURES]
    logits = np.empty(rows)
    concepts = np.zeros((rows, len(SCENE_CONCEPTS)), dtype=np.int64)  # the drawn concepts, for the context term
    for n in range(rows):
        texts, concepts[n], logits[n] = _impression(users[n], items[n], unseen_rate, world, config, effects, rng)
        for k, text in enumerate(texts):
            scene[k].append(text)
    if context is not None:  # computed outside the loop: the main stream's draws stay the same
        logits += context.term(users, concepts, world.shop_category[items])
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return Interactions(
        user_id=users.astype(np.int64),
        item_id=items.astype(np.int64),
        label=labels,
        timestamp=np.arange(rows, dtype=np.int64),
        scene=scene,
    )


def _impressions(rows: int, world: _World, config: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N,) users and (N,) shops shown to them: mostly any shop, partly the user's favourites (real candidate
    generators are biased to what a user likes, which is also what makes a user's histories resemble each other)."""
    num_items = len(world.names)
    users = rng.integers(0, config.num_users, size=rows)
    affinity = world.taste[:, world.shop_category] + config.latent_scale * world.user_latent @ world.shop_latent.T  # (U, I)
    favorites = np.argsort(-affinity, axis=1)[:, : config.favorites_per_user]  # (U, F)
    items = rng.integers(0, num_items, size=rows)
    from_favorites = rng.random(rows) < config.favorite_exposure
    items[from_favorites] = favorites[users[from_favorites], rng.integers(0, config.favorites_per_user, size=from_favorites.sum())]
    return users, items


def _impression(
    user: int, item: int, unseen_rate: float, world: _World, config: SynthConfig, effects: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[list[str], list[int], float]:
    """One impression's scene texts (in :data:`SCENE_FEATURES` order), the concept drawn for each feature of
    :data:`SCENE_CONCEPTS` and the click logit without the context term."""
    category = world.shop_category[item]
    texts, concepts, scene_term = [], [], 0.0
    for feature, by_name in SCENE_CONCEPTS.items():
        concept = int(rng.integers(len(by_name)))
        concepts.append(concept)
        scene_term += effects[feature][concept, category]
        options = by_name[list(by_name)[concept]][1]
        held = rng.random() < unseen_rate
        texts.append(_paraphrase(options, config.held_out_per_concept, held, rng))
    # the user searched for a category they like (softmax over taste)
    preference = np.exp(world.taste[user] - world.taste[user].max())
    searched = int(rng.choice(len(CATEGORIES), p=preference / preference.sum()))
    held = rng.random() < unseen_rate
    texts.append(_paraphrase(SEARCH_QUERIES[list(CATEGORIES)[searched]], config.held_out_per_concept, held, rng))
    clicked = _recent_clicks(searched, world, rng)
    texts.append(", ".join(world.names[s] for s in clicked))
    clicked_categories = {int(world.shop_category[s]) for s in clicked}
    logit = (
        config.bias
        + world.taste[user, category]
        + config.latent_scale * world.user_latent[user] @ world.shop_latent[item]
        + world.quality[item]
        + config.scene_strength * scene_term
        + config.search_bonus * (searched == category)
        + config.click_bonus * (category in clicked_categories)
    )
    return texts, concepts, logit


def _recent_clicks(searched: int, world: _World, rng: np.random.Generator) -> list[int]:
    """The shops the user just looked at: 1-2 shops, each half of the time from the searched category."""
    clicked = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.5:
            pool = np.flatnonzero(world.shop_category == searched)
        else:
            pool = np.arange(len(world.names))
        clicked.append(int(rng.choice(pool)))
    return clicked


def _knowledge(rng: np.random.Generator, held_out: int, strict: bool) -> list[str]:
    """General-language sentences relating every paraphrase to its meaning (see module docstring); ``strict``:
    only the paraphrases train and valid use (the last ``held_out`` of each tuple are dropped)."""

    def visible(options: tuple[str, ...]) -> tuple[str, ...]:
        return options[: len(options) - held_out] if strict else options

    lines = []
    for feature, concepts in SCENE_CONCEPTS.items():
        for concept, (weights, all_options) in concepts.items():
            options = visible(all_options)
            gloss = CONCEPT_GLOSS[(feature, concept)]
            liked = [TRAIT_WANTS[t] for t, w in weights.items() if w > 0]
            disliked = [TRAIT_WANTS[t] for t, w in weights.items() if w < 0]
            for phrase in options:
                others = [o for o in options if o != phrase]
                lines.append(f"{phrase} means {gloss}.")
                lines.append(f"{phrase} is like {rng.choice(others)} or {rng.choice(others)}.")
                for want in liked:
                    lines.append(f"with {phrase}, people often want {want}.")
                for want in disliked:
                    lines.append(f"with {phrase}, people rarely want {want}.")
    for category, all_queries in SEARCH_QUERIES.items():
        queries = visible(all_queries)
        for query in queries:
            others = [q for q in queries if q != query]
            lines.append(f"{query} is a kind of {category}.")
            lines.append(f"someone looking for {query} may also like {rng.choice(others)}.")
    rng.shuffle(lines)
    return lines


def generate(config: SynthConfig) -> Dataset:
    """Draw the whole world, its three splits and the knowledge text from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    world = _build_world(config, rng)
    categories = list(CATEGORIES)
    items = Items(
        name=world.names,
        category=[categories[c] for c in world.shop_category],
        description=world.descriptions,
    )
    history_rng = np.random.default_rng((config.seed, HISTORY_STREAM))
    context = _context_taste(config, history_rng) if config.history_length > 0 else None
    splits = {
        "train": _sample_split(config.train_rows, 0.0, world, config, rng, context),
        "valid": _sample_split(config.valid_rows, 0.0, world, config, rng, context),
        "test": _sample_split(config.test_rows, config.unseen_paraphrase_rate, world, config, rng, context),
    }
    info = DatasetInfo(
        name="synth", scene_features=SCENE_FEATURES, num_users=config.num_users, num_items=len(world.names)
    )
    # drawn last, so the strict variant changes knowledge.txt and nothing else
    knowledge = _knowledge(rng, config.held_out_per_concept, config.strict_knowledge)
    history = _history(config, world, context, history_rng) if context is not None else None
    return Dataset(info=info, items=items, splits=splits, knowledge=knowledge, history=history)
