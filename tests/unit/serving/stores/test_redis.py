"""RedisStore against a real ``redis-server`` on a free loopback port, and TieredStore with Redis as L2.

The servers come from ``redis_server_factory`` (tests/conftest.py: no persistence; skipped, with the
reason, where ``redis-server`` or the ``redis`` client is missing); tests that stop, pause or restart
it get their own server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from larr.serving.server.ports import free_port
from larr.serving.stores import redis as redis_tier
from larr.serving.stores.protocol import SceneKey, SceneStore, StoreStats
from larr.serving.stores.redis import RedisStats, RedisStore, RedisStoreConfig
from larr.serving.stores.tiered import TieredStore

redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install 'redis[hiredis]>=5')")

D = 64


@pytest.fixture(scope="module")
def server(redis_server_factory):
    return redis_server_factory()  # stopped at the end of the session


@pytest.fixture()
def own_server(redis_server_factory):
    srv = redis_server_factory()
    yield srv
    srv.stop()  # resumes it first, in case a test left it paused


@pytest.fixture()
def store(server, request) -> Iterator[RedisStore]:
    # a key prefix per test: tests share the module's server, never each other's keys
    s = RedisStore(RedisStoreConfig(url=server.url, socket_timeout_ms=500, key_prefix=f"t:{request.node.name}:"))
    yield s
    s.close()


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    """(n, D) float32 L2-normalised rows, as the embedder returns them."""
    rows = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_keys(n: int, version: str = "v1", feature: int = 0) -> list[SceneKey]:
    return [SceneKey(version, feature, f"scene text {i} ✓") for i in range(n)]


def command_calls(admin, command: str) -> int:
    return admin.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


# -- round trip and layout --------------------------------------------------------------------------
def test_round_trip_in_float16(store: RedisStore):
    assert isinstance(store, SceneStore)
    keys, rows = make_keys(50), unit_rows(50)
    store.put_many(keys, rows)
    got = store.get_many(keys)
    assert all(v is not None and v.dtype == np.float32 and v.shape == (D,) for v in got)
    got = np.stack(got)
    # exactly numpy's float16 rounding of the float32 rows...
    np.testing.assert_array_equal(got, rows.astype(np.float16).astype(np.float32))
    # ...within float16's bound for components in [-1, 1]: 2^-12 (module docstring: measured 2.0e-4)
    assert np.abs(got - rows).max() <= 2.0**-12
    s = store.stats()
    assert isinstance(s, RedisStats) and isinstance(s, StoreStats)
    assert (s.hits, s.misses, s.errors, s.degraded) == (50, 0, 0, False)


def test_unknown_keys_and_other_versions_miss(store: RedisStore):
    keys, rows = make_keys(3), unit_rows(3)
    store.put_many(keys, rows)
    other_version = [SceneKey("v2", k.feature, k.text) for k in keys]
    other_feature = [SceneKey(k.embedder_version, 1, k.text) for k in keys]
    unknown = [SceneKey("v1", 0, "never written")]
    got = store.get_many(other_version + other_feature + unknown + keys[:1])
    assert got[:7] == [None] * 7 and got[7] is not None
    assert (store.stats().hits, store.stats().misses) == (1, 7)
    assert store.get_many([]) == []


def test_digest_collision_reads_as_a_miss(store: RedisStore, monkeypatch):
    monkeypatch.setattr(redis_tier, "text_digest", lambda text: "0" * 32)  # every text collides
    a, b = SceneKey("v1", 0, "alpha"), SceneKey("v1", 0, "beta")
    assert store.redis_key(a) == store.redis_key(b)
    store.put_many([a], unit_rows(1))
    assert store.get_many([b]) == [None]  # same Redis key, other text: never a's vector
    assert store.get_many([a])[0] is not None
    assert store.stats().collisions == 1


def test_unparsable_values_are_misses(store: RedisStore, server):
    (k,) = make_keys(1)
    server.admin().set(store.redis_key(k), b"\x01")
    assert store.get_many([k]) == [None] and store.stats().corrupt == 1


def test_rows_outside_float16_are_not_stored(store: RedisStore):
    keys, rows = make_keys(2), unit_rows(2)
    rows[1, 0] = 1e6
    store.put_many(keys, rows)
    assert store.get_many(keys)[1] is None and store.stats().dropped_writes == 1
    with pytest.raises(ValueError):
        store.put_many(keys, rows[:1])


def test_ttl_sets_an_expiry(server):
    store = RedisStore(RedisStoreConfig(url=server.url, socket_timeout_ms=500, key_prefix="ttl:", ttl_s=60))
    (k,) = make_keys(1)
    store.put_many([k], unit_rows(1))
    assert 0 < server.admin().ttl(store.redis_key(k)) <= 60


# -- one round trip per call ---------------------------------------------------------------------------
@pytest.mark.parametrize("ttl_s", [None, 60])
def test_one_round_trip_per_call(server, monkeypatch, ttl_s):
    store = RedisStore(RedisStoreConfig(url=server.url, socket_timeout_ms=500, key_prefix=f"rt{ttl_s}:", ttl_s=ttl_s))
    store.get_many(make_keys(1))  # opens the pooled connection outside the count
    sends: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting_send(self, command, check_health=True):
        if self.client_name != "admin":  # only the store's own sends
            sends.append(1)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    admin = server.admin()
    keys, rows = make_keys(100), unit_rows(100)
    before = {c: command_calls(admin, c) for c in ("mget", "get", "set", "mset")}

    store.put_many(keys, rows)
    assert len(sends) == 1
    store.get_many(keys)
    assert len(sends) == 2

    after = {c: command_calls(admin, c) for c in before}
    delta = {c: after[c] - before[c] for c in before}
    expected_writes = {"set": 100, "mset": 0} if ttl_s else {"set": 0, "mset": 1}
    assert delta == {"mget": 1, "get": 0, **expected_writes}
    assert store.stats().round_trips == 3


# -- Redis failing never fails a request ----------------------------------------------------------------
class FakeClock:
    """Stands in for the ``time`` module inside the Redis tier: the retry window moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_stopped_redis_gives_misses_and_recovers_by_itself(own_server, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(redis_tier, "time", clock)
    store = RedisStore(RedisStoreConfig(url=own_server.url, socket_timeout_ms=50, retry_after_s=5))
    keys, rows = make_keys(5), unit_rows(5)
    store.put_many(keys, rows)
    assert all(v is not None for v in store.get_many(keys))

    own_server.stop()
    assert store.get_many(keys) == [None] * 5  # an error, answered as misses
    store.put_many(keys, rows)  # dropped while degraded, never raised
    s = store.stats()
    assert s.degraded and s.errors == 1 and s.degraded_total == 1 and s.skipped == 1
    assert s.misses == 5 and s.dropped_writes == 5

    own_server.start()  # same port, empty (no persistence)
    # inside the retry window Redis is not asked at all (a down Redis costs no timeout per request)
    assert store.get_many(keys) == [None] * 5
    assert store.stats().errors == 1 and store.stats().skipped == 2 and store.stats().degraded

    clock.now += 5  # retry_after_s later the store tries again by itself, on a fresh connection
    for _ in range(50):  # bounded poll (the restarted server already answers PING)
        store.put_many(keys, rows)
        if not store.stats().degraded:
            break
        clock.now += 5
    s = store.stats()
    assert not s.degraded and s.recoveries == 1
    assert all(v is not None for v in store.get_many(keys))


def test_recovers_in_real_time(own_server):
    """The same without a fake clock: a small retry_after_s, then a bounded poll (no timing asserted)."""
    store = RedisStore(RedisStoreConfig(url=own_server.url, socket_timeout_ms=50, retry_after_s=0.05))
    keys, rows = make_keys(2), unit_rows(2)
    store.put_many(keys, rows)
    own_server.stop()
    assert store.get_many(keys) == [None, None] and store.stats().degraded
    own_server.start()
    for _ in range(400):
        store.put_many(keys, rows)
        if not store.stats().degraded:
            break
        time.sleep(0.01)
    assert not store.stats().degraded and all(v is not None for v in store.get_many(keys))


def test_paused_redis_times_out_into_misses(own_server):
    """A hung server (SIGSTOP) costs one socket timeout, not a hang, and no redis-py retries."""
    store = RedisStore(RedisStoreConfig(url=own_server.url, socket_timeout_ms=20, retry_after_s=60))
    keys, rows = make_keys(3), unit_rows(3)
    store.put_many(keys, rows)
    own_server.pause()
    try:
        got = store.get_many(keys)
        assert got == [None] * 3
        s = store.stats()
        assert s.degraded and s.errors == 1
        assert "Timeout" in store.last_error
        assert store.get_many(keys) == [None] * 3 and store.stats().skipped == 1
    finally:
        own_server.resume()


def test_unreachable_redis_at_start_is_not_an_error():
    store = RedisStore(RedisStoreConfig(url=f"redis://127.0.0.1:{free_port()}/0", retry_after_s=60))
    assert store.get_many(make_keys(2)) == [None, None]
    store.put_many(make_keys(2), unit_rows(2))
    assert store.stats().degraded and store.stats().errors == 1


# -- config ------------------------------------------------------------------------------------------
def test_config_validation_and_params():
    with pytest.raises(ValueError):
        RedisStoreConfig(socket_timeout_ms=0)
    with pytest.raises(ValueError):
        RedisStoreConfig(ttl_s=0)
    with pytest.raises(ValueError):
        RedisStoreConfig(retry_after_s=-1)
    config = RedisStoreConfig.from_params({
        "redis_url": "redis://cache:6379/1", "redis_socket_timeout_ms": "3", "redis_ttl_s": "3600",
        "scene_store": "lru,redis",  # not ours: ignored
    })
    assert config == RedisStoreConfig(url="redis://cache:6379/1", socket_timeout_ms=3.0, ttl_s=3600)
    assert RedisStoreConfig.from_params({"redis_ttl_s": "none"}).ttl_s is None
    with pytest.raises(ValueError, match="redis_timeout"):
        RedisStoreConfig.from_params({"redis_timeout": "3"})


# -- tiers ----------------------------------------------------------------------------------------
class DictStore:
    """An in-test L1."""

    def __init__(self):
        self.rows: dict[SceneKey, np.ndarray] = {}

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        return [self.rows.get(k) for k in keys]

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        self.rows.update({k: np.array(v, np.float32) for k, v in zip(keys, vectors)})

    def stats(self) -> StoreStats:
        return StoreStats(entries=len(self.rows))


def redis_l2(server, prefix: str) -> RedisStore:
    return RedisStore(RedisStoreConfig(url=server.url, socket_timeout_ms=500, key_prefix=prefix))


def test_tiered_write_through_and_promotion(server):
    l1, l2 = DictStore(), redis_l2(server, "tier:")
    store = TieredStore([l1, l2])
    keys, rows = make_keys(4), unit_rows(4)
    store.put_many(keys[:2], rows[:2])
    assert set(l1.rows) == set(keys[:2])  # write-through reached L1 ...
    assert all(v is not None for v in l2.get_many(keys[:2]))  # ... and Redis

    l2.put_many(keys[2:], rows[2:])  # only in L2 (e.g. written by another replica)
    got = store.get_many(keys)
    assert all(v is not None for v in got)
    assert set(l1.rows) == set(keys)  # L2 hits promoted to L1
    np.testing.assert_array_equal(l1.rows[keys[3]], rows[3].astype(np.float16).astype(np.float32))
    s = store.stats()
    assert (s.hits, s.misses, s.promotions) == (4, 0, 2)
    assert isinstance(s.tiers[1], RedisStats) and s.tiers[1].hits == 2 + 2  # 2 read directly above, 2 through the tiers


def test_two_replicas_share_one_redis(server):
    replica_a = TieredStore([DictStore(), redis_l2(server, "shared:")])
    replica_b = TieredStore([DictStore(), redis_l2(server, "shared:")])
    keys, rows = make_keys(3), unit_rows(3)
    replica_a.put_many(keys, rows)
    got = replica_b.get_many(keys)
    np.testing.assert_array_equal(np.stack(got), rows.astype(np.float16).astype(np.float32))
    assert replica_b.stats().hits == 3 and replica_b.stats().tiers[0].entries == 3


def test_tiered_with_redis_down_still_answers_from_l1(own_server):
    l1 = DictStore()
    store = TieredStore([l1, RedisStore(RedisStoreConfig(url=own_server.url, socket_timeout_ms=50, retry_after_s=60))])
    keys, rows = make_keys(2), unit_rows(2)
    store.put_many(keys[:1], rows[:1])
    own_server.stop()
    got = store.get_many(keys)
    assert got[0] is not None and got[1] is None
    store.put_many(keys[1:], rows[1:])  # reaches L1 even though L2 drops it
    assert keys[1] in l1.rows and store.stats().tiers[1].degraded
