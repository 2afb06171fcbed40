"""FeatureCacheMetrics: the cache's counters reach Prometheus as increments, its levels as gauges, per tier."""

from __future__ import annotations

import numpy as np

from larr.serving.cache_metrics import CACHE_METRICS, PREFIX, FeatureCacheMetrics
from larr.serving.feature_cache import SceneFeatureCache, SceneVocab
from larr.serving.fresh_text import BackgroundEmbedder
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.tiered import TieredStore
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer
from larr.training.llm import train_bpe_tokenizer

FEATURES = ("weather", "place")


class FakeMetric:
    def __init__(self, labels):
        self.labels, self.value, self.increments = labels, 0.0, []

    def increment(self, by):
        self.increments.append(by)
        self.value += by

    def set(self, value):
        self.value = value


class FakeFamily:
    def __init__(self, name, description, kind):
        self.name, self.kind, self.series = name, kind, []

    def Metric(self, labels):  # noqa: N802 -- pb_utils' spelling
        metric = FakeMetric(labels)
        self.series.append(metric)
        return metric


class FakePbUtils:
    class MetricFamily:
        COUNTER, GAUGE = "counter", "gauge"

        def __new__(cls, name, description, kind):
            return FakeFamily(name, description, kind)


def make_cache(store) -> SceneFeatureCache:
    hf = train_bpe_tokenizer(["heavy rain at the office", "sunny at home"] * 20, 300, FEATURES)
    tokenizer = EmbeddingTokenizer(hf.backend_tokenizer, EmbeddingInputConfig(max_length=16))
    return SceneFeatureCache(FEATURES, tokenizer, SceneVocab(FEATURES, ({}, {})), store, "v1")


def serve(cache, requests):
    batch = cache.begin([cache.parse(r) for r in requests])
    if batch.missing:
        cache.complete(batch, np.ones((len(batch.missing), 3), np.float32))


def test_counters_are_sent_as_increases_and_gauges_as_levels():
    read_only = LRUStore(10)
    read_only.put_many([SceneKey("v1", 0, "sunny")], np.ones((1, 3), np.float32))
    read_only.writable = False  # a table-like first tier
    cache = make_cache(TieredStore([read_only, LRUStore(10)]))
    background = BackgroundEmbedder(lambda texts: None, cache.store, max_batch=4)
    misses = MissEmbedder(cache, lambda texts: None)
    metrics = FeatureCacheMetrics(FakePbUtils, {"instance": "i0"}, cache)
    names = {family.name for family in metrics.families.values()}
    assert names == {PREFIX + m.name for m in CACHE_METRICS} | {PREFIX + "tier_entries", PREFIX + "tier_bytes"}
    assert metrics.families["hits_total"].kind == "counter" and metrics.families["entries"].kind == "gauge"

    serve(cache, [[b"heavy rain", b"office"], [b"heavy rain", b"home"]])  # 3 distinct misses, 1 coalesced
    metrics.report(cache, background, misses)
    serve(cache, [[b"sunny", b"office"]])  # 1 hit in the table, 1 in the LRU
    metrics.report(cache, background, misses)
    metrics.report(cache, background, misses)  # nothing new: no increment of 0 is sent

    series = metrics.series
    assert series["misses_total"].increments == [3] and series["coalesced_total"].increments == [1]
    assert series["hits_total"].increments == [2] and series["hits_total"].value == 2
    assert series["entries"].value == 1 + 3  # a gauge: the level now, all tiers
    tiers = [(s["tier_entries"].labels["tier"], s["tier_entries"].value) for s in metrics.tiers]
    assert tiers == [("lru", 1), ("lru", 3)]  # per tier, fastest first; the labels keep the instance
    assert all(s["tier_entries"].labels["instance"] == "i0" for s in metrics.tiers)
    # the background embedder's pacing is counted in seconds, sent as increases like the other counters
    assert metrics.series["background_paused_seconds_total"].increments == []
    background.paused_s = 1.5
    metrics.report(cache, background, misses)
    background.paused_s = 2.0
    metrics.report(cache, background, misses)
    assert metrics.series["background_paused_seconds_total"].increments == [1.5, 0.5]
