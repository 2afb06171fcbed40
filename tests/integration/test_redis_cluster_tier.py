"""The shared tier on a real Redis Cluster on loopback (three ``redis-server --cluster-enabled yes`` masters joined by
``redis-cli --cluster create``), served by real tritonservers on the tiny repository (``redis+cluster://`` URL).

- a lookup batch costs one round trip per node it touches, counted on the sockets (a counting connection class)
  and checked against the nodes' own ``INFO commandstats`` (one GET per key arrived, in that many pipelines);
- a text embedded by replica A is a Redis hit on replica B;
- ``larr load-store`` of the tiny table makes every table text a Redis hit on a replica started with an empty LRU
  and without the table (its cache metrics: no miss, no embedder call, one Redis hit per distinct text);
- SIGKILL of one master under load fails no request (last: the cluster stays one master short).

Waits are bounded polls. Skipped where ``redis-server``/``redis-cli`` or the ``redis`` client is missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from larr.clients import LarrClient
from larr.contract import SCENE_TABLE_FILE, SCENE_TABLE_INDEX_FILE
from larr.serving.server.ports import free_ports
from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.redis import RedisStoreConfig
from larr.serving.stores.redis_cluster import RedisClusterStore

from .test_replicas_redis import CTR_FP16_ATOL, ITEMS, Replica, export_redis_repository, fresh_scene, poll, two_replicas

redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install 'redis[hiredis]>=5')")
REDIS_SERVER, REDIS_CLI = shutil.which("redis-server"), shutil.which("redis-cli")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server / redis-cli not found"),
]

MASTERS = 3


class RedisClusterNodes:
    """Three masters, no replicas; ``cluster-require-full-coverage no`` so the others serve on when one is lost."""

    def __init__(self, root: Path):
        ports = free_ports(2 * MASTERS)
        self.ports, self.bus_ports = ports[:MASTERS], ports[MASTERS:]
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "/0"

    def start(self) -> None:
        for port, bus in zip(self.ports, self.bus_ports):
            node_dir = self.root / str(port)
            node_dir.mkdir(parents=True)
            self.procs.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                 "--cluster-require-full-coverage", "no", "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.ports:
            assert poll(lambda port=port: self._ping(port)), f"redis-server on {port} never answered"
        subprocess.run([REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
                       check=True, capture_output=True, timeout=120)
        for port in self.ports:
            assert poll(lambda port=port: b"cluster_state:ok" in self.admin(port).execute_command("CLUSTER", "INFO")), port

    def _ping(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError):
            return bool(self.admin(port).ping())
        return False

    def admin(self, port: int):
        return redis.Redis(port=port, socket_timeout=2)

    def get_calls(self, port: int) -> int:
        """GET commands the node has executed (INFO commandstats)."""
        return int(self.admin(port).info("commandstats").get("cmdstat_get", {}).get("calls", 0))

    def keys(self) -> int:
        return sum(self.admin(port).dbsize() for port, proc in zip(self.ports, self.procs) if proc.poll() is None)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis_cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def counting_connection_class(sends: dict[int, int]):
    """A redis-py connection that counts the sends (one per round trip: a pipeline is one send) per port."""

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command, check_health=True):
            sends[self.port] = sends.get(self.port, 0) + 1
            return super().send_packed_command(command, check_health)

    return CountingConnection


def test_a_lookup_batch_costs_one_round_trip_per_node(cluster):
    sends: dict[int, int] = {}
    config = RedisStoreConfig(url=cluster.url, socket_timeout_ms=2000, key_prefix="larr:roundtrip:")
    store = RedisClusterStore(config, connection_class=counting_connection_class(sends))
    keys = [SceneKey("v1", k % 5, f"round trip text {k}") for k in range(300)]
    vectors = np.random.default_rng(0).standard_normal((len(keys), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.put_many(keys, vectors)
    assert store.stats().errors == 0

    gets_before = [cluster.get_calls(port) for port in cluster.ports]
    sends.clear()
    rows = store.get_many(keys)
    gets_after = [cluster.get_calls(port) for port in cluster.ports]
    touched = [port for port, before, after in zip(cluster.ports, gets_before, gets_after) if after > before]
    assert len(touched) == MASTERS  # 300 keys spread over every master's slots
    assert sum(after - before for before, after in zip(gets_before, gets_after)) == len(keys)  # one GET per key
    assert sends == {port: 1 for port in touched}  # ... sent as ONE pipeline per node: 3 round trips, not 300
    np.testing.assert_allclose(np.stack(rows), vectors, rtol=0, atol=2.5e-4)  # float16 in Redis
    assert store.get_many([SceneKey("v1", 0, "never written")]) == [None]
    store.close()


@pytest.fixture(scope="module")
def repository(tiny_run, cluster, tmp_path_factory) -> Path:
    return export_redis_repository(tiny_run, tmp_path_factory.mktemp("larr_repository_cluster"), cluster.url)


@pytest.fixture(scope="module")
def replicas(repository) -> Iterator[tuple[Replica, Replica]]:
    with two_replicas(repository) as pair:
        yield pair


def scene_features(repository: Path) -> list[str]:
    return json.loads((repository / "feature_cache" / "1" / SCENE_TABLE_INDEX_FILE).read_text(encoding="utf-8"))["features"]


def test_a_text_embedded_by_one_replica_is_a_cluster_hit_on_the_other(replicas, repository, cluster):
    a, b = replicas
    features = scene_features(repository)
    scene = fresh_scene(features, "cluster 1")
    keys_before = cluster.keys()
    with LarrClient(a.grpc_url) as client:
        ctr_a = client.score(scene, 5, ITEMS)
    assert cluster.keys() == keys_before + len(features)  # written through, spread over the masters

    before, embedded_before = b.cache_counters(), b.embedder_inferences()
    with LarrClient(b.grpc_url) as client:
        ctr_b = client.score(scene, 5, ITEMS)
    after = b.cache_counters()
    assert b.embedder_inferences() == embedded_before
    assert after.get("misses_total", 0) == before.get("misses_total", 0)
    assert after["redis_hits_total"] - before.get("redis_hits_total", 0) == len(features)
    np.testing.assert_allclose(ctr_b, ctr_a, rtol=0, atol=CTR_FP16_ATOL)


def test_load_store_makes_every_table_text_a_redis_hit_on_a_replica_without_the_table(
    replicas, repository, cluster, tmp_path
):
    version_dir = repository / "feature_cache" / "1"
    index = json.loads((version_dir / SCENE_TABLE_INDEX_FILE).read_text(encoding="utf-8"))
    load = subprocess.run(
        [sys.executable, "-m", "larr", "load-store", "--table", str(version_dir), "--redis-url", cluster.url,
         "--batch-size", "500", "--no-progress"], capture_output=True, text=True, timeout=600,
    )
    assert load.returncode == 0, load.stderr
    assert f"{index['rows']} rows" in load.stdout

    bare = tmp_path / "repository"  # the same repository less its scene table: the replica starts with LRU -> Redis
    shutil.copytree(repository, bare)
    (bare / "feature_cache" / "1" / SCENE_TABLE_FILE).unlink()
    (bare / "feature_cache" / "1" / SCENE_TABLE_INDEX_FILE).unlink()
    texts: dict[int, list[str]] = {}
    for feature, text, _ in index["keys"]:
        texts.setdefault(feature, []).append(text)
    features = index["features"]
    replica = Replica(bare)
    replica.start()
    try:
        with LarrClient(replica.grpc_url) as client:
            for i in range(max(len(column) for column in texts.values())):  # every table text at least once
                client.score({features[k]: column[i % len(column)] for k, column in texts.items()}, i % 50, ITEMS)
        counters = replica.cache_counters()
        embedded = replica.embedder_inferences()
    finally:
        replica.stop()
    assert counters.get("misses_total", 0) == 0, counters
    assert embedded == 0
    assert counters["redis_hits_total"] == index["rows"]  # each distinct text once from Redis, repeats from the LRU


def test_sigkill_of_one_master_under_load_fails_no_request(replicas, repository, cluster):
    a, _ = replicas
    features = scene_features(repository)
    done, errors = [0], []
    enough, lock = threading.Event(), threading.Lock()

    def worker(worker_id: int) -> None:
        try:
            with LarrClient(a.grpc_url) as client:
                for i in range(500):  # bounded; `enough` ends it far sooner
                    if enough.is_set():
                        return
                    ctr = client.score(fresh_scene(features, f"cluster load {worker_id}-{i}"), i, ITEMS)
                    if not np.isfinite(ctr).all():
                        raise AssertionError(f"non-finite CTR {ctr}")
                    with lock:
                        done[0] += 1
        except BaseException as error:  # surfaced below
            errors.append(error)
            enough.set()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert poll(lambda: done[0] >= 10 or bool(errors)), "the load never got going"
        errors_before = a.cache_counters()["redis_errors_total"]
        cluster.procs[0].kill()  # SIGKILL of one master, mid-stream
        cluster.procs[0].wait(timeout=10)
        at_loss = done[0]
        assert poll(lambda: done[0] >= at_loss + 20 or bool(errors)), "requests stalled with a master down"
    finally:
        enough.set()
        for thread in threads:
            thread.join()
    assert not errors, f"requests failed with a master down: {errors[:3]}"
    after = a.cache_counters()
    assert after["redis_errors_total"] > errors_before  # the loss is counted, not hidden
    keys_before = cluster.keys()
    with LarrClient(a.grpc_url) as client:  # the two live masters still take their share of new texts
        assert poll(lambda: (client.score(fresh_scene(features, f"after loss {time.monotonic()}"), 1, ITEMS) is not None)
                    and cluster.keys() > keys_before)
