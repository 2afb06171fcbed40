"""Which :class:`~larr.serving.stores.protocol.SceneStore` answers the feature cache: ``make_store``, the one factory.

The ``feature_cache`` model config picks it (string parameters, as Triton hands them over)::

    parameters { key: "scene_store"     value { string_value: "local" } }
    parameters { key: "cache_capacity"  value { string_value: "100000" } }   # entries
    parameters { key: "cache_max_bytes" value { string_value: "268435456" } }  # 0 = no byte bound
    parameters { key: "redis_url"       value { string_value: "redis://10.0.0.5:6379/0" } }  # kind "redis"
    # Redis Cluster: "redis+cluster://10.0.0.5:7000,10.0.0.6:7000/0" (larr.serving.stores.redis_cluster)

    store = make_store(model_parameters(config), version_dir)

The kinds, fastest tier first (a lookup asks each tier only for the keys the ones before it missed):

    lru     LRU                       in-process, bounded in entries and bytes; starts empty
    local   table -> LRU              + the precomputed scene table in the version folder (``larr
                                      embed-scenes``): a (re)started server is warm at once
    redis   table -> LRU -> Redis     + Redis shared by every replica: a text embedded by one replica
                                      is a hit on all; Redis down or slow costs misses, never errors

New embeddings are written through to every writable tier (the table is read-only). A repository
exported before ``scene_store`` existed gets the LRU (with today's default bounds). No Triton,
no torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from larr.choices import ChoiceEnum
from larr.contract import (
    PARAM_CACHE_CAPACITY,
    PARAM_CACHE_MAX_BYTES,
    PARAM_EMBEDDER_VERSION,
    PARAM_SCENE_FEATURES,
    PARAM_SCENE_STORE,
    SCENE_TABLE_INDEX_FILE,
)
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneStore, StoreStats
from larr.serving.stores.redis import RedisStore, RedisStoreConfig
from larr.serving.stores.redis_cluster import RedisClusterStore, make_redis_tier
from larr.serving.stores.table import TableStore
from larr.serving.stores.tiered import TieredStats, TieredStore

log = logging.getLogger(__name__)

DEFAULT_CACHE_CAPACITY = 100_000  # entries; the one default of export, write_repository and the benchmarks
DEFAULT_CACHE_MAX_BYTES = 256 * 2**20  # the LRU's bound in bytes (lru.entry_bytes); 0 = entries alone


class StoreKind(ChoiceEnum):
    """The values of the ``scene_store`` parameter."""

    LRU = "lru"  # in-process, per instance, bounded in entries and bytes (larr.serving.stores.lru.LRUStore)
    LOCAL = "local"  # the precomputed scene table, then the LRU for texts it lacks
    REDIS = "redis"  # table, LRU, then Redis shared by the replicas (larr.serving.stores.redis)

    @classmethod
    def choice_name(cls) -> str:
        return PARAM_SCENE_STORE


@dataclass(frozen=True)
class StoreConfig:
    """What ``make_store`` builds; ``kind`` may be given as its string and is normalised once."""

    kind: StoreKind = StoreKind.LRU
    capacity: int = DEFAULT_CACHE_CAPACITY  # entries
    max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # 0 = no byte bound
    redis: RedisStoreConfig = field(default_factory=RedisStoreConfig)  # kind "redis" only

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
            redis=RedisStoreConfig.from_params(params),
        )


def build_store(config: StoreConfig, table: TableStore | None = None) -> SceneStore:
    """The store ``config`` describes (each kind builds here, and only here); ``table`` is the
    precomputed scene table the ``local`` and ``redis`` kinds put in front, when there is one."""
    lru = LRUStore(config.capacity, config.max_bytes)
    if config.kind is StoreKind.LRU:
        return lru
    tiers: list[SceneStore] = [table] if table is not None else []
    tiers.append(lru)
    if config.kind is StoreKind.REDIS:
        tiers.append(make_redis_tier(config.redis))  # one node, or Redis Cluster for redis+cluster://
    return TieredStore(tiers) if len(tiers) > 1 else lru


def make_store(
    params: Mapping[str, str], version_dir: str | Path | None = None, max_text_chars: int | None = None
) -> SceneStore:
    """The store a ``feature_cache`` model config asks for (see the module docstring).

    ``version_dir``: the model's version folder, where the exporter puts the scene table; a ``local`` or
    ``redis`` store without a table there starts cold (logged). ``max_text_chars``: the served tokenizer's
    clip, checked against the table's.
    """
    config = StoreConfig.from_parameters(params)
    table = None
    if config.kind is not StoreKind.LRU and version_dir is not None:
        if (Path(version_dir) / SCENE_TABLE_INDEX_FILE).exists():
            features: Sequence[str] | None = None
            if PARAM_SCENE_FEATURES in params:
                features = json.loads(params[PARAM_SCENE_FEATURES])
            table = TableStore.load(version_dir, params[PARAM_EMBEDDER_VERSION], features, max_text_chars)
        else:
            log.warning("%s: no scene table; the %s store starts cold (build one with `larr embed-scenes`)",
                        version_dir, config.kind.value)
    return build_store(config, table)


def tier_names(store: SceneStore) -> tuple[str, ...]:
    """A label per tier of ``store``, fastest first (``("table", "lru", "redis")``), for per-tier metrics."""
    tiers = store.tiers if isinstance(store, TieredStore) else (store,)
    return tuple(_TIER_NAMES.get(type(tier), type(tier).__name__.lower()) for tier in tiers)


def tier_stats(store: SceneStore, stats: StoreStats) -> tuple[StoreStats, ...]:
    """Per-tier stats matching :func:`tier_names` (``stats`` is ``store.stats()``)."""
    return stats.tiers if isinstance(stats, TieredStats) else (stats,)


_TIER_NAMES: dict[type, str] = {TableStore: "table", LRUStore: "lru", RedisStore: "redis", RedisClusterStore: "redis"}
