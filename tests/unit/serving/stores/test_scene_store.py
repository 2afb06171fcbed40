"""``LRUStore`` (entry and byte bounds, eviction order, counters) and ``make_store``, the one factory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from larr.contract import PARAM_CACHE_CAPACITY, PARAM_CACHE_MAX_BYTES, PARAM_SCENE_STORE
from larr.serving.stores import lru
from larr.serving.stores.factory import DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES, StoreConfig, StoreKind, make_store
from larr.serving.stores.lru import ENTRY_OVERHEAD_BYTES, LRUStore, key_digest
from larr.serving.stores.protocol import SceneKey, SceneStore, StoreStats

D = 4  # float32: 16 bytes per vector


def key(text: str, feature: int = 0) -> SceneKey:
    return SceneKey("v1", feature, text)


def rows(*values: float) -> np.ndarray:
    return np.array([[v] * D for v in values], dtype=np.float32)  # (M, D)


def test_lru_store_is_a_scene_store():
    assert isinstance(LRUStore(3), SceneStore)


def holds(store: LRUStore, *texts: str) -> bool:
    return all(key(text) in store for text in texts)


ENTRY = D * 4 + ENTRY_OVERHEAD_BYTES  # what one entry counts


def test_entry_bound_evicts_least_recently_used_first():
    store = LRUStore(capacity=2)
    store.put_many([key("a"), key("b")], rows(1, 2))
    assert store.get_many([key("a")])[0][0] == 1  # a is now the most recent; b the least
    store.put_many([key("c")], rows(3))  # evicts b
    assert holds(store, "a", "c") and not holds(store, "b")
    assert store.get_many([key("b"), key("c")])[0] is None
    assert store.stats() == StoreStats(hits=2, misses=1, evictions=1, entries=2, bytes=2 * ENTRY)


def test_byte_bound_counts_vector_and_overhead_whatever_the_text():
    # every entry counts the same, a one-character text or a 10,000-character one: the LRU keeps a digest
    store = LRUStore(capacity=100, max_bytes=2 * ENTRY + ENTRY // 2)  # holds two entries, not three
    store.put_many([key("é", 0), key("x" * 10_000, 1)], rows(1, 2))
    assert store.stats().bytes == 2 * ENTRY and store.stats().entries == 2
    store.put_many([key("é", 2)], rows(3))
    assert key("é", 0) not in store and key("x" * 10_000, 1) in store and key("é", 2) in store
    assert store.stats() == StoreStats(hits=0, misses=0, evictions=1, entries=2, bytes=2 * ENTRY)
    tiny = LRUStore(capacity=100, max_bytes=ENTRY - 1)  # one entry alone is larger than the bound: never stored
    tiny.put_many([key("a")], rows(4))
    assert key("a") not in tiny and tiny.stats().entries == 0


def test_keys_differing_in_version_feature_or_text_are_distinct_entries():
    store = LRUStore(capacity=10)
    keys = [SceneKey("v1", 0, "a"), SceneKey("v2", 0, "a"), SceneKey("v1", 1, "a"), SceneKey("v1", 0, "a ")]
    store.put_many(keys, rows(1, 2, 3, 4))
    assert [v[0] for v in store.get_many(keys)] == [1, 2, 3, 4]
    assert len({key_digest(k) for k in keys}) == 4 and all(len(key_digest(k)) == 16 for k in keys)


def test_counted_bytes_match_the_memory_python_allocates_for_the_entries():
    # independent measure: tracemalloc's count of what the store's module allocated and still holds, after eviction
    # turned it over twice. Only lru.py's allocations count: tracemalloc sees every thread, and in a full test run
    # threads left by earlier tests allocate meanwhile (once 59 KB, enough to break the bound).
    # Measured: 280 B of overhead per 16-wide entry, 330 B per 576-wide one, against the 360 B counted.
    for dim in (576, 16):  # SmolLM-135M's width and a tiny model's
        tracemalloc.start()
        store = LRUStore(capacity=10**6, max_bytes=4 * 2**20)
        vector = np.ones((1, dim), np.float32)
        for i in range(3 * store.max_bytes // (dim * 4 + ENTRY_OVERHEAD_BYTES)):
            store.put_many([key(f"{i:08d} " + "heavy rain near the office " * 40)], vector)  # ~1.1 KB texts
        store_module = tracemalloc.Filter(True, lru.__file__)  # the copies, digests and dict the store keeps
        held = sum(trace.size for trace in tracemalloc.take_snapshot().filter_traces([store_module]).traces)
        tracemalloc.stop()
        counted = store.stats().bytes
        assert store.stats().evictions > store.stats().entries  # turned over
        assert held <= counted <= 1.25 * held, (dim, counted, held)  # an upper bound, tight for wide vectors


def test_byte_bound_evicts_as_many_as_needed():
    store = LRUStore(capacity=100, max_bytes=3 * ENTRY)
    store.put_many([key("a"), key("b"), key("c")], rows(1, 2, 3))
    wide = np.ones((1, (2 * ENTRY - ENTRY_OVERHEAD_BYTES) // 4), np.float32)  # counts two entries: a and b must go
    store.put_many([key("d")], wide)
    assert holds(store, "c", "d") and not holds(store, "a", "b")
    assert store.stats().evictions == 2 and store.stats().bytes == 3 * ENTRY


def test_rewriting_a_key_replaces_its_bytes():
    store = LRUStore(capacity=10)
    store.put_many([key("a"), key("a")], rows(1, 2))
    assert store.stats().entries == 1 and store.stats().bytes == ENTRY
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
