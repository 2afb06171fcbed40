"""The feature cache's Prometheus metrics, ``larr_feature_cache_*``, through Triton's custom-metrics API.

``pb_utils`` is passed in, so this imports and is tested without Triton. What is exported:

    counters  hits_total, misses_total (lookups no store had), coalesced_total (repeats of a text within
              one batch), joined_total (misses that waited for another batch's embedder call), evictions_total,
              fresh_fallbacks_total (async), deadline_fallbacks_total (deadline: 1 - it / misses_total is the
              share of fresh texts answered with their own embedding), background_embedded_total,
              background_failed_total, background_dropped_total, background_paused_seconds_total; with a Redis
              tier also redis_hits_total, redis_errors_total
    gauges    entries, bytes (all tiers); tier_entries / tier_bytes {tier="table"|"lru"|"redis"};
              with a Redis tier redis_degraded (1 while Redis is skipped after a failure)

Every series carries the labels the adapter gives (model, instance, embedder_version): instances are
processes with their own in-process tiers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.fresh_text import BackgroundEmbedder
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.stores.factory import tier_names, tier_stats
from larr.serving.stores.protocol import StoreStats
from larr.serving.stores.redis import RedisStats
from larr.serving.stores.tiered import TieredStats

PREFIX = "larr_feature_cache_"


@dataclass(frozen=True)
class CacheMetric:
    """One exported metric, ``larr_feature_cache_{name}``: a counter (only goes up) or a gauge (a level now)."""

    name: str
    help: str
    counter: bool


CACHE_METRICS: tuple[CacheMetric, ...] = (
    CacheMetric("hits_total", "scene-feature lookups served from the cache", True),
    CacheMetric("misses_total", "scene-feature lookups that no store had (each needed the embedder)", True),
    CacheMetric("coalesced_total", "lookups served by another lookup of the same text in the same batch", True),
    CacheMetric("joined_total", "misses answered by an embedder call another batch had started (embedded once)", True),
    CacheMetric("evictions_total", "entries evicted to keep the cache within its bound", True),
    CacheMetric("fresh_fallbacks_total", "lookups answered with the unseen-text row (fresh_text_policy async)", True),
    CacheMetric("deadline_fallbacks_total", "missing scene texts answered with the unseen-text row because their "
                "embedding missed miss_deadline_ms (fresh_text_policy deadline; counted like misses_total)", True),
    CacheMetric("background_embedded_total", "scene texts embedded in the background and stored", True),
    CacheMetric("background_failed_total", "scene texts whose background embedding failed", True),
    CacheMetric("background_dropped_total", "scene texts dropped from the full background queue, oldest first", True),
    CacheMetric("background_paused_seconds_total", "seconds the background embedder paused between batches to keep to "
                "background_busy_share", True),
    CacheMetric("entries", "entries in the cache now, all tiers", False),
    CacheMetric("bytes", "bytes of the cached texts and vectors now, all tiers", False),
)
TIER_METRICS: tuple[CacheMetric, ...] = (
    CacheMetric("tier_entries", "entries held by one store tier now (only the LRU is bound by cache_capacity)", False),
    CacheMetric("tier_bytes", "bytes of texts and vectors held by one store tier now", False),
)


# exported only where the store has a Redis tier (scene_store redis): Redis loss must show as errors and a
# degraded flag, not only as more misses, and an L2 hit (embedded by another replica) apart from L1 hits
REDIS_METRICS: tuple[CacheMetric, ...] = (
    CacheMetric("redis_hits_total", "lookups answered by Redis (L2: embedded by this or another replica)", True),
    CacheMetric("redis_errors_total", "Redis calls that failed or timed out (their lookups became misses)", True),
    CacheMetric("redis_degraded", "1 while Redis is skipped after a failure (misses go to the embedder), else 0", False),
)


def redis_tier_stats(stats: StoreStats) -> RedisStats | None:
    """The Redis tier's counters inside a store's ``stats()``, or None for a store without Redis."""
    if isinstance(stats, RedisStats):
        return stats
    if isinstance(stats, TieredStats):
        return next((tier for tier in stats.tiers if isinstance(tier, RedisStats)), None)
    return None


def redis_metric_values(stats: StoreStats) -> dict[str, float]:
    """The :data:`REDIS_METRICS` now, by name, from a store's ``stats()``; empty for a store without Redis."""
    redis = redis_tier_stats(stats)
    if redis is None:
        return {}
    return {"redis_hits_total": float(redis.hits), "redis_errors_total": float(redis.errors),
            "redis_degraded": float(redis.degraded)}


def metric_values(
    cache: SceneFeatureCache, background: BackgroundEmbedder, misses: MissEmbedder, stats: StoreStats
) -> dict[str, float]:
    """Every :data:`CACHE_METRICS` (and Redis metric, where there is a Redis tier) by name, from ``stats``
    (``cache.stats()``, taken once per report: a tiered store gathers every tier's)."""
    return {
        "hits_total": stats.hits, "misses_total": stats.misses, "coalesced_total": cache.coalesced,
        "joined_total": misses.joined,
        "evictions_total": stats.evictions, "fresh_fallbacks_total": cache.fresh_fallbacks,
        "deadline_fallbacks_total": cache.deadline_fallbacks,
        "background_embedded_total": background.embedded, "background_failed_total": background.failed,
        "background_dropped_total": background.dropped, "background_paused_seconds_total": background.paused_s,
        "entries": stats.entries, "bytes": stats.bytes, **redis_metric_values(stats),
    }


class FeatureCacheMetrics:
    """Creates the metric families once and reports the cache's counters as Prometheus counters and gauges."""

    def __init__(self, pb_utils: Any, labels: Mapping[str, str], cache: SceneFeatureCache):
        has_redis = redis_tier_stats(cache.stats()) is not None
        self.metrics = CACHE_METRICS + (REDIS_METRICS if has_redis else ())
        # the families must outlive their metrics, or increment() fails
        self.families = {m.name: self._family(pb_utils, m) for m in self.metrics + TIER_METRICS}
        self.series = {m.name: self.families[m.name].Metric(labels=dict(labels)) for m in self.metrics}
        self.tiers = [
            {m.name: self.families[m.name].Metric(labels={**labels, "tier": tier}) for m in TIER_METRICS}
            for tier in tier_names(cache.store)
        ]
        self.reported = {m.name: 0.0 for m in self.metrics if m.counter}

    @staticmethod
    def _family(pb_utils: Any, metric: CacheMetric) -> Any:
        kind = pb_utils.MetricFamily.COUNTER if metric.counter else pb_utils.MetricFamily.GAUGE
        return pb_utils.MetricFamily(name=PREFIX + metric.name, description=metric.help, kind=kind)

    def report(self, cache: SceneFeatureCache, background: BackgroundEmbedder, misses: MissEmbedder) -> None:
        stats = cache.stats()
        for name, value in metric_values(cache, background, misses, stats).items():
            if name not in self.reported:  # a gauge: the level now
                self.series[name].set(value)
            elif value > self.reported[name]:  # Prometheus counters only go up: send the increase
                self.series[name].increment(value - self.reported[name])
                self.reported[name] = value
        for series, tier in zip(self.tiers, tier_stats(cache.store, stats)):
            series["tier_entries"].set(tier.entries)
            series["tier_bytes"].set(tier.bytes)
