"""Which :class:`~larr.serving.store.SceneStore` answers the feature cache: ``make_store``, the one factory.

The ``feature_cache`` model config picks it (string parameters, as Triton hands them over)::

    parameters { key: "scene_store"     value { string_value: "lru" } }
    parameters { key: "cache_capacity"  value { string_value: "100000" } }   # entries
    parameters { key: "cache_max_bytes" value { string_value: "0" } }        # 0 = no byte bound

    store = make_store(model_parameters(config))

A repository exported before ``scene_store`` existed has neither it nor ``cache_max_bytes``: it gets
the LRU with no byte bound, as it always had. No Triton, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from larr.contract import PARAM_CACHE_CAPACITY, PARAM_CACHE_MAX_BYTES, PARAM_SCENE_STORE
from larr.serving.lru import LRUStore
from larr.serving.store import SceneStore

DEFAULT_CACHE_CAPACITY = 100_000  # entries; the one default of export, write_repository and the benchmarks
DEFAULT_CACHE_MAX_BYTES = 0  # 0 = no byte bound: the entry bound alone, as before byte bounds existed


class StoreKind(str, Enum):
    """The values of the ``scene_store`` parameter."""

    LRU = "lru"  # in-process, per instance, bounded in entries and bytes (larr.serving.lru.LRUStore)

    def __str__(self) -> str:  # the parameter's string value, also inside f-strings and str()
        return self.value

    @classmethod
    def parse(cls, value: str | StoreKind) -> StoreKind:
        """``value`` as a kind; a ValueError naming the known kinds otherwise."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(repr(k.value) for k in cls)
            raise ValueError(f"unknown {PARAM_SCENE_STORE} {value!r}: one of {known}") from None


@dataclass(frozen=True)
class StoreConfig:
    """What ``make_store`` builds; ``kind`` may be given as its string and is normalised once."""

    kind: StoreKind = StoreKind.LRU
    capacity: int = DEFAULT_CACHE_CAPACITY  # entries
    max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # 0 = no byte bound

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", StoreKind.parse(self.kind))
        if self.capacity < 0:
            raise ValueError(f"{PARAM_CACHE_CAPACITY} must be >= 0, got {self.capacity}")
        if self.max_bytes < 0:
            raise ValueError(f"{PARAM_CACHE_MAX_BYTES} must be >= 0 (0 = no byte bound), got {self.max_bytes}")

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> StoreConfig:
        """From a model config's parameters (string values); absent ones take the defaults."""
        return cls(
            kind=params.get(PARAM_SCENE_STORE, StoreKind.LRU.value),
            capacity=int(params.get(PARAM_CACHE_CAPACITY, DEFAULT_CACHE_CAPACITY)),
            max_bytes=int(params.get(PARAM_CACHE_MAX_BYTES, DEFAULT_CACHE_MAX_BYTES)),
        )


def build_store(config: StoreConfig) -> SceneStore:
    """The store ``config`` describes (each kind builds here, and only here)."""
    if config.kind is StoreKind.LRU:
        return LRUStore(config.capacity, config.max_bytes)
    raise NotImplementedError(f"{PARAM_SCENE_STORE} {config.kind.value!r} has no builder in make_store")


def make_store(params: Mapping[str, str]) -> SceneStore:
    """The store a ``feature_cache`` model config asks for (see the module docstring)."""
    return build_store(StoreConfig.from_parameters(params))
