"""FeatureCacheMetrics: the cache's counters reach Prometheus as increments, its levels as gauges, per tier."""

from __future__ import annotations

import numpy as np

from larr.serving.cache_metrics import CACHE_METRICS, PREFIX, FeatureCacheMetrics
from larr.serving.fresh_text import BackgroundEmbedder
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.tiered import TieredStore


def serve(cache, requests):
    batch = cache.begin([cache.parse(r) for r in requests])
    if batch.missing:
        cache.complete(batch, np.ones((len(batch.missing), 3), np.float32))


def test_counters_are_sent_as_increases_and_gauges_as_levels(pb_utils, scene_cache):
    read_only = LRUStore(10)
    read_only.put_many([SceneKey("v1", 0, "sunny")], np.ones((1, 3), np.float32))
    read_only.writable = False  # a table-like first tier
    cache = scene_cache(TieredStore([read_only, LRUStore(10)]))
    background = BackgroundEmbedder(lambda texts: None, cache.store, max_batch=4)
    misses = MissEmbedder(cache, lambda texts: None)
    metrics = FeatureCacheMetrics(pb_utils, {"instance": "i0"}, cache)
    names = {family.name for family in metrics.families.values()}
    assert names == {PREFIX + m.name for m in CACHE_METRICS} | {PREFIX + "tier_entries", PREFIX + "tier_bytes"}
    assert metrics.families["hits_total"].kind == pb_utils.MetricFamily.COUNTER
    assert metrics.families["entries"].kind == pb_utils.MetricFamily.GAUGE

    serve(cache, [[b"heavy rain", b"office"], [b"heavy rain", b"home"]])  # 3 distinct misses, 1 coalesced
    metrics.report(cache, background, misses)
    serve(cache, [[b"sunny", b"office"]])  # 1 hit in the table, 1 in the LRU
    metrics.report(cache, background, misses)
    metrics.report(cache, background, misses)  # nothing new: no increment of 0 is sent

    series = metrics.series
    assert series["misses_total"].increments == [3] and series["coalesced_total"].increments == [1]
    assert series["hits_total"].increments == [2] and series["hits_total"].value() == 2
    assert series["entries"].value() == 1 + 3  # a gauge: the level now, all tiers
    tiers = [(s["tier_entries"].labels["tier"], s["tier_entries"].value()) for s in metrics.tiers]
    assert tiers == [("lru", 1), ("lru", 3)]  # per tier, fastest first; the labels keep the instance
    assert all(s["tier_entries"].labels["instance"] == "i0" for s in metrics.tiers)
    # the background embedder's pacing is counted in seconds, sent as increases like the other counters
    assert metrics.series["background_paused_seconds_total"].increments == []
    background.paused_s = 1.5
    metrics.report(cache, background, misses)
    background.paused_s = 2.0
    metrics.report(cache, background, misses)
    assert metrics.series["background_paused_seconds_total"].increments == [1.5, 0.5]


def test_deadline_fallbacks_are_a_counter_of_their_own(pb_utils, scene_cache):
    cache = scene_cache(LRUStore(10))
    background = BackgroundEmbedder(lambda texts: None, cache.store, max_batch=4)
    misses = MissEmbedder(cache, lambda texts: None)
    metrics = FeatureCacheMetrics(pb_utils, {"instance": "i0"}, cache)
    assert metrics.families["deadline_fallbacks_total"].kind == pb_utils.MetricFamily.COUNTER
    cache.deadline_fallbacks = 2  # two texts missed the deadline (SceneFeatureCache.fall_back_late)
    metrics.report(cache, background, misses)
    cache.deadline_fallbacks = 3
    metrics.report(cache, background, misses)
    assert metrics.series["deadline_fallbacks_total"].increments == [2, 1]
    assert metrics.series["fresh_fallbacks_total"].increments == []  # async's fallbacks are counted apart
