"""Tiers of :class:`~larr.serving.stores.protocol.SceneStore`, fastest first: L1 in-process → L2 Redis → ...

::

    store = TieredStore([LRUStore(...), RedisStore(RedisStoreConfig(url=...))])
    vectors = store.get_many(keys)     # tier 1 for all keys, tier 2 for tier 1's misses only, ...
    store.put_many(keys, embeddings)   # (M, D): write-through to every writable tier
    store.stats()                      # TieredStats: overall hits/misses + one StoreStats per tier

Promotion: a key found in tier ``t`` is put into every writable tier above ``t`` (one ``put_many``
per tier per call), so the next lookup of it stops at the fastest tier.

Writable convention: a store that must not receive ``put_many`` (a read-only precomputed table)
declares the class or instance attribute ``writable = False``. A store without the attribute is
writable. ``TieredStore.writable`` is True when any of its tiers is.

Overall ``hits``/``misses`` count lookups: a lookup is a hit if any tier had the key. ``evictions``,
``entries`` and ``bytes`` are sums over the tiers (a vector held by two tiers counts twice).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from larr.serving.stores.protocol import SceneKey, SceneStore, StoreStats


def is_writable(store: SceneStore) -> bool:
    """The writable convention (module docstring): False only if the store says ``writable = False``."""
    return bool(getattr(store, "writable", True))


@dataclass
class TieredStats(StoreStats):
    """Overall counters (a lookup is a hit if any tier had it) plus each tier's own stats, fastest first."""

    tiers: tuple[StoreStats, ...] = field(default_factory=tuple)
    promotions: int = 0  # vectors copied up into faster tiers


class TieredStore:
    """A :class:`SceneStore` over ``tiers``, fastest first (module docstring: lookup, promotion, writes).

    Args:
        tiers: at least one store; each asked only for the keys the tiers before it missed.
    """

    def __init__(self, tiers: Sequence[SceneStore]):
        if not tiers:
            raise ValueError("TieredStore needs at least one tier")
        self.tiers: tuple[SceneStore, ...] = tuple(tiers)
        self._hits = 0
        self._misses = 0
        self._promotions = 0
        self._lock = threading.Lock()  # counters: a background writer may share the store

    @property
    def writable(self) -> bool:
        return any(is_writable(tier) for tier in self.tiers)

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        """One (D,) float32 vector or None per key, in order; hits from lower tiers are promoted."""
        found: list[np.ndarray | None] = [None] * len(keys)
        pending = list(range(len(keys)))  # indices into keys still missing, in order
        for level, tier in enumerate(self.tiers):
            if not pending:
                break
            vectors = tier.get_many([keys[i] for i in pending])
            if len(vectors) != len(pending):
                raise RuntimeError(f"tier {level} ({type(tier).__name__}) answered {len(vectors)} of {len(pending)} keys")
            hits = [i for i, vector in zip(pending, vectors) if vector is not None]
            for i, vector in zip(pending, vectors):
                if vector is not None:
                    found[i] = vector
            if hits and level > 0:
                self._promote(level, [keys[i] for i in hits], np.stack([found[i] for i in hits]))
            pending = [i for i in pending if found[i] is None]
        with self._lock:
            self._misses += len(pending)
            self._hits += len(keys) - len(pending)
        return found

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        """Write ``vectors`` (len(keys), D) through to every writable tier."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"put_many needs vectors of shape ({len(keys)}, D), got {vectors.shape}")
        for tier in self.tiers:
            if is_writable(tier):
                tier.put_many(keys, vectors)

    def stats(self) -> TieredStats:
        per_tier = tuple(tier.stats() for tier in self.tiers)
        with self._lock:
            hits, misses, promotions = self._hits, self._misses, self._promotions
        return TieredStats(
            hits=hits,
            misses=misses,
            evictions=sum(s.evictions for s in per_tier),
            entries=sum(s.entries for s in per_tier),
            bytes=sum(s.bytes for s in per_tier),
            tiers=per_tier,
            promotions=promotions,
        )

    def _promote(self, level: int, keys: list[SceneKey], vectors: np.ndarray) -> None:
        """Put ``vectors`` (len(keys), D), found in tier ``level``, into the writable tiers above it."""
        for tier in self.tiers[:level]:
            if is_writable(tier):
                tier.put_many(keys, vectors)
                with self._lock:
                    self._promotions += len(keys)
