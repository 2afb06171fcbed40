"""``LRUStore``: the in-process :class:`~larr.serving.store.SceneStore`, bounded in entries and in bytes.

    store = LRUStore(capacity=100_000, max_bytes=512 * 2**20)
    store.put_many(keys, vectors)    # (M, D) float32; least recently used entries go first
    store.get_many(keys)             # one (D,) vector or None per key; a hit becomes most recently used

An entry's bytes are what it holds that grows with the data: the UTF-8 bytes of its key's text plus
its vector's ``nbytes`` (D * 4 for float32). Python's per-object overhead is not counted, so the
process uses somewhat more than ``max_bytes``. No Triton, no torch.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np

from larr.serving.store import SceneKey, StoreStats


def entry_bytes(key: SceneKey, vector: np.ndarray) -> int:
    """What one entry counts against ``max_bytes``: its text's UTF-8 bytes plus its vector's bytes."""
    return len(key.text.encode("utf-8")) + vector.nbytes


class LRUStore:
    """At most ``capacity`` entries and ``max_bytes`` bytes (see :func:`entry_bytes`; 0 = no byte bound).

    Inserting evicts least recently used entries until both bounds hold; an entry larger than
    ``max_bytes`` by itself is not stored. ``capacity == 0`` disables caching (every lookup misses,
    nothing is stored) -- the "cache off" benchmark variant.
    """

    def __init__(self, capacity: int, max_bytes: int = 0):
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0 (0 = no byte bound), got {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._entries: OrderedDict[SceneKey, np.ndarray] = OrderedDict()  # least recently used first
        self._stats = StoreStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries  # no counting, no recency: for inspection

    def keys(self) -> Iterator[SceneKey]:
        """The keys, least recently used first (no counting, no recency)."""
        return iter(self._entries)

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for key in keys:
            vector = self._entries.get(key)
            if vector is None:
                self._stats.misses += 1
            else:
                self._entries.move_to_end(key)
                self._stats.hits += 1
            out.append(vector)
        return out

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        if len(keys) != len(vectors):
            raise ValueError(f"put_many: {len(keys)} keys for {len(vectors)} vectors")
        if self.capacity == 0:
            return
        for key, row in zip(keys, vectors):
            vector = np.array(row, dtype=np.float32)  # (D,) a copy: the store must not pin the caller's batch
            size = entry_bytes(key, vector)
            if self.max_bytes and size > self.max_bytes:
                continue
            old = self._entries.pop(key, None)
            if old is not None:
                self._stats.bytes -= entry_bytes(key, old)
            self._entries[key] = vector
            self._stats.bytes += size
            self._evict()
        self._stats.entries = len(self._entries)

    def stats(self) -> StoreStats:
        """A snapshot (a copy: later lookups do not change it)."""
        return dataclasses.replace(self._stats)

    def clear(self) -> None:
        """Drop every entry (the counters stay: they are monotone)."""
        self._entries.clear()
        self._stats.entries = self._stats.bytes = 0

    def _evict(self) -> None:
        while len(self._entries) > self.capacity or (self.max_bytes and self._stats.bytes > self.max_bytes):
            key, vector = self._entries.popitem(last=False)
            self._stats.bytes -= entry_bytes(key, vector)
            self._stats.evictions += 1
