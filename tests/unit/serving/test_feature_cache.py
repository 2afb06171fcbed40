"""The scene-feature cache: request validation, one embedder batch per execute, the store behind it, the counters."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from larr.serving.cache_metrics import REDIS_METRICS, redis_metric_values
from larr.serving.ctr_request import validate_ctr_request
from larr.serving.errors import RequestError
from larr.serving.feature_cache import FeatureCacheSettings, SceneFeatureCache
from larr.serving.fresh_text import DEFAULT_BUSY_SHARE, DEFAULT_MISS_DEADLINE_MS, FreshTextPolicy
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.redis import RedisStore, RedisStoreConfig
from larr.serving.stores.tiered import TieredStore


@pytest.fixture
def make_cache(scene_cache) -> Callable[..., SceneFeatureCache]:
    def make(capacity=100, version="v1") -> SceneFeatureCache:
        return scene_cache(LRUStore(capacity), ({"heavy rain": 1, "sunny": 2}, {"office": 1}), version)

    return make


def fake_embed(texts: list[str]) -> np.ndarray:
    """A deterministic 'embedder': one row per text, derived from the text."""
    return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)


def run_batch(cache: SceneFeatureCache, requests: list) -> tuple[list, list[int]]:
    """What the Triton adapter does; returns the results and the size of each embedder call."""
    batch = cache.begin([cache.parse(r) for r in requests])
    calls = []
    if batch.missing:
        input_ids, attention_mask = cache.tokenize(batch.missing)
        calls.append(len(input_ids))
        cache.complete(batch, fake_embed(batch.missing))
    return batch.results(), calls


def test_misses_of_all_requests_go_in_one_embedder_call(make_cache):
    cache = make_cache()
    requests = [[b"heavy rain", b"office"], [b"heavy rain", b"home"], [b"sunny", b"office"]]
    results, calls = run_batch(cache, requests)
    assert calls == [4]  # distinct (feature, text): rain, office, home, sunny
    stats = cache.stats()
    assert stats.misses == 4 and stats.hits == 0  # the store saw each distinct key once
    assert cache.coalesced == 2  # the repeats ("heavy rain", "office") rode on those lookups
    emb, ids = results[1]
    assert emb.shape == (2, 3) and emb.dtype == np.float32
    np.testing.assert_array_equal(ids, [1, 0])  # "home" is not in the place vocab
    np.testing.assert_array_equal(results[0][0][0], results[1][0][0])
    # the same texts again: all hits, no embedder call
    again, calls = run_batch(cache, requests)
    assert calls == [] and cache.stats().hits == 4 and cache.coalesced == 2 + 2
    np.testing.assert_array_equal(again[2][0], results[2][0])


class RecordingStore(LRUStore):
    """An LRUStore that records the calls the cache makes (a stand-in for any injected SceneStore)."""

    def __init__(self):
        super().__init__(capacity=100)
        self.calls: list[tuple[str, list]] = []

    def get_many(self, keys):
        self.calls.append(("get_many", list(keys)))
        return super().get_many(keys)

    def put_many(self, keys, vectors):
        self.calls.append(("put_many", list(keys)))
        super().put_many(keys, vectors)


def test_one_store_lookup_and_one_write_per_execute(scene_cache):
    store = RecordingStore()
    cache = scene_cache(store)
    run_batch(cache, [[b"sunny", b"office"], [b"sunny", b"home"], [b"x"]])  # the last is invalid
    keys = [SceneKey("v1", 0, "sunny"), SceneKey("v1", 1, "office"), SceneKey("v1", 1, "home")]
    assert store.calls == [("get_many", keys), ("put_many", keys)]  # distinct keys, first-seen order


def test_a_failed_embedder_call_fails_every_request_that_waited_on_it(make_cache):
    cache = make_cache()
    batch = cache.begin([cache.parse([b"sunny", b"office"]), cache.parse([b"x"])])
    batch.fail(RequestError("embedder down"))
    assert [str(r) for r in batch.results()] == ["embedder down", str(batch.requests[1])]
    assert "schema has 2" in str(batch.requests[1])


def test_same_text_in_different_features_are_different_keys(make_cache):
    cache = make_cache()
    results, calls = run_batch(cache, [[b"office", b"office"]])
    assert calls == [2]
    assert not np.array_equal(results[0][0][0], results[0][0][1])  # formatted with different feature tags


def test_bad_requests_fail_alone(make_cache):
    cache = make_cache()
    requests = [
        [b"sunny", b"office"],
        [b"sunny"],  # too few
        [b"sunny", b"office", b"extra"],  # too many
        [b"sunny", b"   "],  # empty text
        [b"\xff\xfe", b"office"],  # not UTF-8
        [b"sunny", b"home"],
    ]
    results, _ = run_batch(cache, requests)
    assert isinstance(results[0], tuple) and isinstance(results[5], tuple)
    messages = [str(r) for r in results[1:5]]
    assert "has 1 texts; the scene schema has 2: weather, place" in messages[0]
    assert "has 3 texts" in messages[1]
    assert "SCENE_TEXT[1] (place) is empty" in messages[2]
    assert "SCENE_TEXT[0] (weather) is not valid UTF-8" in messages[3]


def test_huge_text_is_truncated_and_keyed_bounded(make_cache):
    cache = make_cache()
    huge = ("rain " * 20_000).encode()
    results, _ = run_batch(cache, [[huge, b"office"], [huge[: cache.max_text_chars], b"office"]])
    np.testing.assert_array_equal(results[0][0], results[1][0])  # same clipped text -> same entry
    assert cache.stats().misses == 2
    clipped = huge.decode()[: cache.max_text_chars]
    assert SceneKey("v1", 0, clipped) in cache.store and len(cache.store) == 2  # keyed by the clipped text


def test_cache_stays_within_bound_under_unique_texts(make_cache):
    cache = make_cache(capacity=50)
    for start in range(0, 1000, 10):
        run_batch(cache, [[f"weather {i}".encode(), f"place {i}".encode()] for i in range(start, start + 10)])
        assert cache.stats().entries <= 50
    assert cache.stats().evictions == 2000 - 50


def test_embedder_version_keys_entries(make_cache):
    first = make_cache(version="v1")
    run_batch(first, [[b"sunny", b"office"]])
    assert SceneKey("v1", 0, "sunny") in first.store and SceneKey("v2", 0, "sunny") not in first.store


def test_complete_checks_embedder_rows(make_cache):
    cache = make_cache()
    batch = cache.begin([cache.parse([b"sunny", b"office"])])
    with pytest.raises(RuntimeError, match="returned"):
        cache.complete(batch, np.zeros((1, 3), np.float32))
    assert cache.stats().entries == 0  # a wrong answer never reaches the store
    with pytest.raises(RuntimeError, match="before complete"):
        batch.results()


@pytest.mark.parametrize(
    ("user", "items", "message"),
    [
        ([-1], [1], "USER_ID must be >= 0, got -1"),
        ([1, 2], [1], "exactly one id"),
        ([1], [], "ITEM_IDS is empty"),
        ([1], list(range(11)), "11 candidates; this server scores at most 10"),
        ([1], [3, -7], "ITEM_IDS[1] = -7: ids must be >= 0"),
    ],
)
def test_ctr_request_validation(user, items, message):
    with pytest.raises(RequestError) as error:
        validate_ctr_request(np.array(user, np.int64), np.array(items, np.int64), max_candidates=10)
    assert message in str(error.value)


def test_ctr_request_accepts_unknown_ids():
    validate_ctr_request(np.array([10**12]), np.array([0, 10**12]), max_candidates=10)


def test_parse_request_refuses_bad_ids_before_any_lookup(make_cache):
    """The ensemble's first step refuses what the ctr step would (the gpu target's TensorRT ctr checks nothing):
    the same messages, per request, and a refused request neither looks anything up nor embeds anything."""
    cache = make_cache()
    texts = [b"heavy rain", b"office"]
    parsed = [
        cache.parse_request(texts, np.array([[1]]), np.array([[3, -7]]), max_candidates=10),  # with the batch axis
        cache.parse_request(texts, np.array([1]), np.arange(11), max_candidates=10),
        cache.parse_request([b"", b"office"], np.array([-1]), np.array([1]), max_candidates=10),  # texts first
        cache.parse_request([b"snow", b"campus"], np.array([10**12]), np.array([10**12]), max_candidates=10),
    ]
    assert str(parsed[0]) == "ITEM_IDS[1] = -7: ids must be >= 0"
    assert str(parsed[1]).startswith("ITEM_IDS has 11 candidates; this server scores at most 10 per request")
    assert str(parsed[2]) == "SCENE_TEXT[0] (weather) is empty; every scene feature needs a text"
    assert parsed[3] == ["snow", "campus"]  # unknown ids are cold start, not errors
    batch = cache.begin(parsed)
    assert [key.text for key in batch.missing_keys] == ["snow", "campus"]  # only the valid request's texts
    assert cache.stats().misses == 2


class FlakyRedis:
    """A stand-in ``redis.Redis`` (MGET/MSET over a dict) that a test can take down and bring back."""

    def __init__(self):
        self.data: dict[bytes, bytes] = {}
        self.down = False

    def _check(self):
        if self.down:
            import redis

            raise redis.ConnectionError("Connection refused")

    def mget(self, keys):
        self._check()
        return [self.data.get(k) for k in keys]

    def mset(self, items):
        self._check()
        self.data.update(items)


def test_redis_metrics_show_l2_hits_loss_and_recovery(scene_cache):
    """Redis loss must show in the metrics as errors and a degraded flag, not only as more misses."""
    pytest.importorskip("redis", reason="the redis client is not installed")
    redis = FlakyRedis()

    def replica() -> SceneFeatureCache:  # a replica's own L1 in front of the one Redis
        l2 = RedisStore(RedisStoreConfig(url="redis://unused:1/0", retry_after_s=0), client=redis)
        return scene_cache(TieredStore([LRUStore(100), l2]))

    a, b = replica(), replica()
    run_batch(a, [[b"sunny", b"office"]])  # A embeds, writes through to Redis
    _, calls = run_batch(b, [[b"sunny", b"office"]])
    assert calls == []  # B: both from Redis
    values = {**redis_metric_values(b.stats()), "misses_total": b.stats().misses}
    assert (values["redis_hits_total"], values["misses_total"], values["redis_errors_total"],
            values["redis_degraded"]) == (2.0, 0.0, 0.0, 0.0)

    redis.down = True
    _, calls = run_batch(b, [[b"snow", b"campus"]])
    assert calls == [2]  # misses went to the embedder, the request was answered
    values = {**redis_metric_values(b.stats()), "misses_total": b.stats().misses}
    assert values["redis_errors_total"] >= 1 and values["redis_degraded"] == 1.0

    redis.down = False  # retry_after_s=0: the next call asks Redis again
    run_batch(b, [[b"hail", b"beach"]])
    assert redis_metric_values(b.stats())["redis_degraded"] == 0.0
    assert set(values) - {"misses_total"} == {m.name for m in REDIS_METRICS}
    assert redis_metric_values(LRUStore(4).stats()) == {}  # no Redis tier, no redis_* metrics


# ------------------------------------------------------------------------------- the model config's settings


def feature_cache_config(drop: tuple[str, ...] = (), max_batch_size: int = 8, **params: str) -> dict:
    """A feature_cache model config as the python backend hands it over (JSON of the protobuf: string
    parameters, int64 dims written as strings)."""
    values = {"scene_features": '["weather", "place"]', "embedder_version": "v1", "max_candidates": "100",
              "embedder_model": "embedder", "embedder_max_batch": "64", **params}
    return {
        "max_batch_size": max_batch_size,
        "parameters": {k: {"string_value": v} for k, v in values.items() if k not in drop},
        "output": [{"name": "SCENE_EMB", "dims": ["2", "32"]}, {"name": "SCENE_IDS", "dims": ["2"]}],
    }


def test_settings_read_every_parameter_once():
    config = feature_cache_config(fresh_text_policy="async", background_embedder_model="embedder_idle",
                                  background_busy_share="0.25", miss_deadline_ms="20")
    assert FeatureCacheSettings.from_model_config(config) == FeatureCacheSettings(
        scene_features=("weather", "place"), embedder_version="v1", max_candidates=100, embedder_model="embedder",
        embedder_max_batch=64, dim=32, batched=True, fresh_text_policy=FreshTextPolicy.ASYNC,
        background_model="embedder_idle", background_busy_share=0.25, miss_deadline_ms=20.0,
    )


def test_settings_defaults_for_repositories_exported_before_the_optional_parameters():
    settings = FeatureCacheSettings.from_model_config(feature_cache_config(max_batch_size=0))
    assert settings.fresh_text_policy is FreshTextPolicy.STRICT
    assert settings.background_model == "embedder"  # background calls go to the one embedder
    assert settings.background_busy_share == DEFAULT_BUSY_SHARE
    assert settings.miss_deadline_ms == DEFAULT_MISS_DEADLINE_MS
    assert settings.batched is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (feature_cache_config(drop=("max_candidates",)), "no parameter 'max_candidates'"),
        (feature_cache_config(max_candidates="ten"), "max_candidates must be an integer, got 'ten'"),
        (feature_cache_config(max_candidates="0"), "max_candidates must be >= 1"),
        (feature_cache_config(embedder_max_batch="-1"), "embedder_max_batch must be >= 1"),
        (feature_cache_config(scene_features="weather"), "scene_features must be a JSON list"),
        (feature_cache_config(scene_features="[]"), "scene_features must name at least one feature"),
        (feature_cache_config(embedder_version=""), "embedder_version must not be empty"),
        (feature_cache_config(fresh_text_policy="lazy"), "unknown fresh_text_policy 'lazy'"),
        (feature_cache_config(background_busy_share="0"), r"background_busy_share must be in \(0, 1\]"),
        (feature_cache_config(background_busy_share="half"), "background_busy_share must be a number"),
        (feature_cache_config(miss_deadline_ms="-1"), "miss_deadline_ms must be a finite number >= 0"),
        (feature_cache_config(miss_deadline_ms="nan"), "miss_deadline_ms must be a finite number >= 0"),
        (feature_cache_config(miss_deadline_ms="soon"), "miss_deadline_ms must be a number"),
    ],
)
def test_settings_name_the_bad_parameter(config, message):
    with pytest.raises(ValueError, match=message):
        FeatureCacheSettings.from_model_config(config)
