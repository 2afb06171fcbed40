"""The pieces of the at-scale path that need no cluster: ``redis+cluster://`` URLs, the Ray engine's dedup digest
(the Redis tier's own key), and the bulk loader's keys, round trips and ``SET NX`` counting against a fake client."""

from __future__ import annotations

import numpy as np
import pytest

from larr.export.load_store import LoadOptions, load_table
from larr.export.ray_engine import key_batch, key_digest
from larr.export.scene_table import SceneTableError, save_scene_table
from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.redis import RedisStore, RedisStoreConfig
from larr.serving.stores.redis_cluster import cluster_nodes, is_cluster_url, make_redis_tier


def test_cluster_urls_name_their_nodes():
    url = "redis+cluster://10.0.0.5:7000,10.0.0.6:7001/0"
    assert is_cluster_url(url) and not is_cluster_url("redis://10.0.0.5:6379/0")
    assert cluster_nodes(url) == [("10.0.0.5", 7000), ("10.0.0.6", 7001)]
    assert cluster_nodes("redis+cluster://[::1]:7000") == [("::1", 7000)]
    for bad in ("redis+cluster://10.0.0.5:7000/3", "redis+cluster://10.0.0.5", "redis://h:1/0"):
        with pytest.raises(ValueError):
            cluster_nodes(bad)
    assert type(make_redis_tier(RedisStoreConfig(url="redis://127.0.0.1:1/0"))) is RedisStore


def test_the_dedup_digest_is_the_redis_keys_tail():
    store = RedisStore(RedisStoreConfig(key_prefix="p:"), client=object())
    key = SceneKey("v9", 3, "heavy rain ☔")
    assert store.redis_key(key).decode() == f"p:v9:{key_digest(3, key.text)}"
    assert key_digest(3, "a") != key_digest(4, "a") and key_digest(3, "a") != key_digest(3, "b")


def test_key_batch_clips_like_scene_key_and_refuses_bad_rows():
    table = key_batch({"feature": np.array(["weather", "place"], object), "text": np.array(["rain" * 10, "x"], object)},
                      ("place", "weather"), max_text_chars=8)
    assert table.column("feature").to_pylist() == [1, 0]
    assert table.column("text").to_pylist() == ["rainrain", "x"]
    assert table.column("digest").to_pylist() == [key_digest(1, "rainrain"), key_digest(0, "x")]
    with pytest.raises(SceneTableError, match="unknown scene feature 'mood'"):
        key_batch({"feature": np.array(["mood"], object), "text": np.array(["calm"], object)}, ("place",), 8)
    with pytest.raises(SceneTableError, match="empty"):
        key_batch({"feature": np.array(["place"], object), "text": np.array(["  "], object)}, ("place",), 8)


class FakePipelineRedis:
    """The two calls the bulk loader makes: ``pipeline(transaction=False)`` and its ``set``/``execute``."""

    def __init__(self):
        self.data: dict[bytes, bytes] = {}
        self.round_trips = 0

    def pipeline(self, transaction=False):
        owner, commands = self, []

        class Pipe:
            def set(self, key, value, ex=None, nx=False):
                commands.append((key, value, nx))

            def execute(self):
                owner.round_trips += 1
                replies = []
                for key, value, nx in commands:
                    fresh = key not in owner.data
                    if fresh or not nx:
                        owner.data[key] = value
                    replies.append(True if fresh or not nx else None)
                return replies

        return Pipe()


def test_load_table_writes_the_replicas_keys_and_only_new_rows(tmp_path):
    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    keys = [(0, "a"), (0, "b"), (1, "a"), (1, "c"), (1, "d")]
    save_scene_table(tmp_path, keys, rows, ("f0", "f1"), 64, "v1", "float32", {})
    client = FakePipelineRedis()
    result = load_table(tmp_path, "redis://fake/0", LoadOptions(batch_size=2, progress=False), client=client)
    assert (result.rows, result.written, result.existing, client.round_trips) == (5, 5, 0, 3)  # ceil(5 / 2) trips

    store = RedisStore(RedisStoreConfig(), client=_ReadOnly(client.data))  # what a replica reads back
    got = store.get_many([SceneKey("v1", f, t) for f, t in keys])
    np.testing.assert_allclose(np.stack(got), rows, rtol=0, atol=2e-3)  # float16 in Redis

    again = load_table(tmp_path, "redis://fake/0", LoadOptions(only_new=True, progress=False), client=client)
    assert (again.written, again.existing) == (0, 5)


class _ReadOnly:
    def __init__(self, data):
        self.data = data

    def mget(self, keys):
        return [self.data.get(k) for k in keys]
