"""A bounded least-recently-used map with hit / miss / eviction counters (no Triton, no torch)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class LRUCache(Generic[V]):
    """At most ``capacity`` entries; inserting into a full cache evicts the least recently used one.

    ``capacity == 0`` disables caching (every lookup misses, nothing is stored) — the "cache off"
    benchmark variant.
    """

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.counters = CacheCounters()
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> V | None:
        """The value (marked most recently used) or None; counts a hit or a miss."""
        value = self._entries.get(key)
        if value is None:
            self.counters.misses += 1
            return None
        self._entries.move_to_end(key)
        self.counters.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.capacity == 0:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
        self._entries[key] = value
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.counters.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
