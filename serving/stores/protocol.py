"""The seam between the feature cache and where scene embeddings live: the ``SceneStore`` protocol.

The feature cache builds keys and asks a store for the vectors of many keys at once; what answers
(an in-process LRU, a precomputed table loaded at start, Redis shared by replicas, or tiers of them)
is a model-config parameter of ``feature_cache`` (``scene_store``), not code in the cache::

    store = LRUStore(capacity=100_000)
    vectors = store.get_many(keys)              # list, one (D,) float32 array or None per key
    store.put_many(missed_keys, embeddings)     # (M, D): write-through of newly embedded texts
    store.stats()                               # StoreStats: hits, misses, evictions, entries, ...

Keys are :class:`SceneKey` ``(embedder_version, feature index, text)``: a new embedder never reads a
stale vector. Importable without Triton and torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class SceneKey(NamedTuple):
    embedder_version: str
    feature: int  # index of the scene feature in the published order
    text: str  # the text as the cache normalises and clips it


@dataclass
class StoreStats:
    """Counters since the store was created (monotone, so they map onto Prometheus counters)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0  # now (a gauge)
    bytes: int = 0  # now (a gauge): what the entries' vectors and keys occupy

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@runtime_checkable
class SceneStore(Protocol):
    """Scene-feature embeddings by key. Implementations count their own hits and misses."""

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        """One (D,) float32 vector or None per key, in order (a None is a miss)."""
        ...

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        """Store ``vectors`` (len(keys), D); the store copies what it keeps."""
        ...

    def stats(self) -> StoreStats:
        ...


def scene_key(embedder_version: str, feature: int, text: str, max_text_chars: int) -> SceneKey:
    """The key of one scene text, as every writer and reader of a store builds it.

    Texts are clipped to the characters the tokenizer can possibly use (``EmbeddingTokenizer.max_text_chars``):
    a 100,000-character text costs one bounded entry and embeds exactly like its clipped prefix.
    """
    return SceneKey(embedder_version, feature, text[:max_text_chars])
