"""``LRUStore``: the in-process :class:`~larr.serving.stores.protocol.SceneStore`, bounded in entries and in bytes.

    store = LRUStore(capacity=100_000, max_bytes=512 * 2**20)
    store.put_many(keys, vectors)    # (M, D) float32; least recently used entries go first
    store.get_many(keys)             # one (D,) vector or None per key; a hit becomes most recently used

The LRU keeps no text: an entry is a 16-byte digest of its key (:func:`key_digest`, xxh3-128) and its
vector, so every entry is made of the same few small objects whatever its text's length. (Holding the
texts -- up to ``max_text_chars``, ~1.2 KB, allocated by malloc between the request's temporaries --
fragmented the feature_cache stub's heap: under a flood of unique texts it levelled off at 2.4x the
bytes it counted.) An entry counts its vector's ``nbytes`` (D * 4 for float32) plus
``ENTRY_OVERHEAD_BYTES``, the Python objects around it, so ``max_bytes`` bounds what the process holds
(checked against tracemalloc in the tests). No Triton, no torch.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import xxhash

from larr.serving.stores.protocol import SceneKey, StoreStats

# Python memory per entry beyond the vector's data, measured with tracemalloc (CPython 3.11, NumPy 1.26/2):
# the digest (a 16-byte bytes object, 56 B), the vector's ndarray object and shape (~130 B) and the
# OrderedDict's slots, which grow to ~170 B per entry once eviction has turned the LRU over.
ENTRY_OVERHEAD_BYTES = 360


def key_digest(key: SceneKey) -> bytes:
    """The 16 bytes that stand for ``key`` in the LRU: xxh3-128 of its embedder version, feature and text.

    Two distinct keys share a digest with probability ~n^2 / 2^129 for n entries (~1e-27 for a million):
    far below any other fault, so the LRU does not keep the text to re-check it (the Redis tier, shared
    and long-lived, does).
    """
    return xxhash.xxh3_128_digest(f"{key.embedder_version}\x00{key.feature}\x00{key.text}".encode("utf-8"))


def entry_bytes(vector: np.ndarray) -> int:
    """What one entry counts against ``max_bytes``: its vector's bytes plus ``ENTRY_OVERHEAD_BYTES``."""
    return vector.nbytes + ENTRY_OVERHEAD_BYTES


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
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()  # key_digest -> (D,); least recent first
        self._stats = StoreStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` (a SceneKey) has an entry; no counting, no recency: for inspection."""
        return isinstance(key, SceneKey) and key_digest(key) in self._entries

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for key in keys:
            digest = key_digest(key)
            vector = self._entries.get(digest)
            if vector is None:
                self._stats.misses += 1
            else:
                self._entries.move_to_end(digest)
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
            size = entry_bytes(vector)
            if self.max_bytes and size > self.max_bytes:
                continue
            digest = key_digest(key)
            old = self._entries.pop(digest, None)
            if old is not None:
                self._stats.bytes -= entry_bytes(old)
            self._entries[digest] = vector
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
            _, vector = self._entries.popitem(last=False)
            self._stats.bytes -= entry_bytes(vector)
            self._stats.evictions += 1
