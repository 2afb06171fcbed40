"""TieredStore over in-test dict stores: lookup order, promotion, write-through, read-only tiers, stats.

(With a real Redis as L2: ``test_redis_store.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from larr.serving.stores.protocol import SceneKey, SceneStore, StoreStats
from larr.serving.stores.tiered import TieredStats, TieredStore, is_writable

D = 8


class DictStore:
    """A SceneStore in a dict that records what it was asked (keys per get_many / put_many call)."""

    def __init__(self, writable: bool = True):
        if not writable:
            self.writable = False
        self.rows: dict[SceneKey, np.ndarray] = {}
        self.gets: list[list[SceneKey]] = []
        self.puts: list[list[SceneKey]] = []
        self._stats = StoreStats()

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        self.gets.append(list(keys))
        out = [self.rows.get(k) for k in keys]
        self._stats.hits += sum(v is not None for v in out)
        self._stats.misses += sum(v is None for v in out)
        return [None if v is None else v.copy() for v in out]

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        self.puts.append(list(keys))
        for key, row in zip(keys, vectors):
            self.rows[key] = np.array(row, dtype=np.float32)

    def stats(self) -> StoreStats:
        return StoreStats(self._stats.hits, self._stats.misses, 0, len(self.rows), 0)


def keys(*texts: str) -> list[SceneKey]:
    return [SceneKey("v1", 0, t) for t in texts]


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(D).astype(np.float32)


def test_dict_store_is_a_scene_store():
    assert isinstance(DictStore(), SceneStore)
    assert isinstance(TieredStore([DictStore()]), SceneStore)


def test_lower_tiers_are_asked_only_for_misses_and_hits_are_promoted():
    l1, l2, l3 = DictStore(), DictStore(), DictStore()
    a, b, c, d = keys("a", "b", "c", "d")
    l1.rows[a], l2.rows[b], l3.rows[c] = vec(0), vec(1), vec(2)
    store = TieredStore([l1, l2, l3])

    got = store.get_many([a, b, c, d])

    np.testing.assert_array_equal(got[0], vec(0))
    np.testing.assert_array_equal(got[1], vec(1))
    np.testing.assert_array_equal(got[2], vec(2))
    assert got[3] is None
    assert l1.gets == [[a, b, c, d]] and l2.gets == [[b, c, d]] and l3.gets == [[c, d]]
    # b (from L2) promoted into L1; c (from L3) into L1 and L2
    assert l1.puts == [[b], [c]] and l2.puts == [[c]] and l3.puts == []
    np.testing.assert_array_equal(l1.rows[c], vec(2))

    # the next lookup stops at L1
    store.get_many([b, c])
    assert len(l2.gets) == 1 and len(l3.gets) == 1


def test_write_through_skips_read_only_tiers():
    l1, table, l2 = DictStore(), DictStore(writable=False), DictStore()
    assert not is_writable(table) and is_writable(l1)
    store = TieredStore([l1, table, l2])
    k = keys("x", "y")
    store.put_many(k, np.stack([vec(0), vec(1)]))
    assert l1.puts == [k] and l2.puts == [k] and table.puts == []

    # a hit in the read-only table is promoted into L1 only (the table is never written)
    (z,) = keys("z")
    table.rows[z] = vec(3)
    store.get_many([z])
    assert l1.puts[-1] == [z] and table.puts == [] and l2.puts == [k]


def test_stats_overall_and_per_tier():
    l1, l2 = DictStore(), DictStore()
    a, b, c = keys("a", "b", "c")
    l2.rows[a] = vec(0)
    store = TieredStore([l1, l2])
    store.get_many([a, b])  # a: L2 hit (promoted), b: miss everywhere
    store.get_many([a, c])  # a: L1 hit, c: miss
    s = store.stats()
    assert isinstance(s, TieredStats)
    assert (s.hits, s.misses, s.promotions) == (2, 2, 1)
    assert s.hit_rate == 0.5
    assert [(t.hits, t.misses) for t in s.tiers] == [(1, 3), (1, 2)]
    assert s.entries == 2  # a in both tiers


def test_empty_and_invalid():
    with pytest.raises(ValueError):
        TieredStore([])
    store = TieredStore([DictStore()])
    assert store.get_many([]) == []
    with pytest.raises(ValueError):
        store.put_many(keys("a", "b"), np.zeros((1, D), np.float32))
    assert not TieredStore([DictStore(writable=False)]).writable
