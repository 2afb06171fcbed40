"""``LRUStore`` (entry and byte bounds, eviction order, counters) and ``make_store``, the one factory."""

from __future__ import annotations

import numpy as np
import pytest

from larr.contract import PARAM_CACHE_CAPACITY, PARAM_CACHE_MAX_BYTES, PARAM_SCENE_STORE
from larr.serving.lru import LRUStore
from larr.serving.store import SceneKey, SceneStore, StoreStats
from larr.serving.stores import DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES, StoreConfig, StoreKind, make_store

D = 4  # float32: 16 bytes per vector


def key(text: str, feature: int = 0) -> SceneKey:
    return SceneKey("v1", feature, text)


def rows(*values: float) -> np.ndarray:
    return np.array([[v] * D for v in values], dtype=np.float32)  # (M, D)


def test_lru_store_is_a_scene_store():
    assert isinstance(LRUStore(3), SceneStore)


def test_entry_bound_evicts_least_recently_used_first():
    store = LRUStore(capacity=2)
    store.put_many([key("a"), key("b")], rows(1, 2))
    assert store.get_many([key("a")])[0][0] == 1  # a is now the most recent; b the least
    store.put_many([key("c")], rows(3))  # evicts b
    assert list(store.keys()) == [key("a"), key("c")]
    assert store.get_many([key("b"), key("c")])[0] is None
    assert store.stats() == StoreStats(hits=2, misses=1, evictions=1, entries=2, bytes=2 * (1 + 16))


def test_byte_bound_counts_utf8_text_and_vector():
    # "é" is 2 UTF-8 bytes: entries of 2 + 16 = 18 bytes; a bound of 40 holds two of them, not three
    store = LRUStore(capacity=100, max_bytes=40)
    store.put_many([key("é", 0), key("é", 1)], rows(1, 2))
    assert store.stats().bytes == 36 and store.stats().entries == 2
    store.put_many([key("é", 2)], rows(3))
    assert list(store.keys()) == [key("é", 1), key("é", 2)]
    assert store.stats() == StoreStats(hits=0, misses=0, evictions=1, entries=2, bytes=36)
    store.put_many([key("x" * 50)], rows(4))  # 66 bytes alone: larger than the bound, never stored
    assert key("x" * 50) not in store and store.stats().entries == 2


def test_byte_bound_evicts_as_many_as_needed():
    store = LRUStore(capacity=100, max_bytes=60)
    store.put_many([key("a"), key("b"), key("c")], rows(1, 2, 3))  # 17 bytes each: 51
    store.put_many([key("d" * 20)], rows(4))  # 36 bytes: a and b must go (51 - 34 + 36 = 53)
    assert list(store.keys()) == [key("c"), key("d" * 20)]
    assert store.stats().evictions == 2 and store.stats().bytes == 17 + 36


def test_rewriting_a_key_replaces_its_bytes():
    store = LRUStore(capacity=10)
    store.put_many([key("a"), key("a")], rows(1, 2))
    assert store.stats().entries == 1 and store.stats().bytes == 17
    np.testing.assert_array_equal(store.get_many([key("a")])[0], rows(2)[0])


def test_store_copies_what_it_keeps():
    store = LRUStore(capacity=10)
    batch = rows(1)
    store.put_many([key("a")], batch)
    batch[0] = 9
    assert store.get_many([key("a")])[0][0] == 1


def test_capacity_zero_stores_nothing_and_stats_are_snapshots():
    off = LRUStore(capacity=0)
    off.put_many([key("a")], rows(1))
    snapshot = off.stats()
    assert off.get_many([key("a")]) == [None] and len(off) == 0
    assert snapshot.misses == 0 and off.stats().misses == 1
    for bad in ({"capacity": -1}, {"capacity": 1, "max_bytes": -1}):
        with pytest.raises(ValueError):
            LRUStore(**bad)
    with pytest.raises(ValueError, match="2 keys for 1 vectors"):
        LRUStore(1).put_many([key("a"), key("b")], rows(1))


def test_make_store_reads_the_model_parameters():
    store = make_store({PARAM_SCENE_STORE: "lru", PARAM_CACHE_CAPACITY: "7", PARAM_CACHE_MAX_BYTES: "1000"})
    assert isinstance(store, LRUStore) and (store.capacity, store.max_bytes) == (7, 1000)


def test_make_store_defaults_for_repositories_without_the_parameters():
    store = make_store({})
    assert isinstance(store, LRUStore) and (store.capacity, store.max_bytes) == (DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES)
    assert StoreConfig(kind="lru").kind is StoreKind.LRU and str(StoreKind.LRU) == "lru"


def test_unknown_store_kind_names_the_known_kinds():
    with pytest.raises(ValueError, match=r"unknown scene_store 'memcached': one of 'lru'"):
        make_store({PARAM_SCENE_STORE: "memcached"})
    with pytest.raises(ValueError, match="cache_capacity must be >= 0"):
        make_store({PARAM_CACHE_CAPACITY: "-1"})
