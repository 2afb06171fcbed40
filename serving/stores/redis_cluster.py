"""L2 tier on Redis Cluster: the Redis store of :mod:`larr.serving.stores.redis` over many nodes.

::

    parameters { key: "redis_url" value { string_value: "redis+cluster://10.0.0.5:7000,10.0.0.6:7000/0" } }

    store = make_redis_tier(RedisStoreConfig(url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001/0"))

``redis+cluster://`` names a few of the cluster's nodes (any; the client learns the rest from them, with
redis-py's ``RedisCluster``); the database is 0, the only one a cluster has. Keys, values, timeouts, the
failure window, write-through and the metrics are the one-node store's: this module changes only how a batch
travels. A lookup batch cannot be one ``MGET`` (a cluster refuses keys of several slots in one command), and
one command per key would be a round trip per key; so the keys are grouped by the node that serves their slot
and each node gets ONE pipeline of ``GET`` (writes: ``SET``): one round trip per node touched.

A lost node costs only its keys. A node that fails (timeout, refused connection) is skipped for
``retry_after_s``: its keys are misses (the embedder answers them) while the other nodes still answer theirs,
and the slot map is re-read from a live node, so after a failover (a replica promoted) the keys are read from
the new master. Only when every node touched fails is the whole tier skipped, as for one node. ``degraded``
is 1 while any node is skipped. Run the cluster with ``cluster-require-full-coverage no``: with the default
(yes) the live masters refuse every key once one master is down, which is all misses until it is back.

``redis`` is imported when a client is built, so this module imports without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.redis import RedisStats, RedisStore, RedisStoreConfig, _redis_errors

CLUSTER_SCHEME = "redis+cluster"


def is_cluster_url(url: str) -> bool:
    return url.strip().lower().startswith(f"{CLUSTER_SCHEME}://")


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """``redis+cluster://h1:p1,h2:p2/0`` -> ``[(h1, p1), (h2, p2)]``; raises ValueError on anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != CLUSTER_SCHEME:
        raise ValueError(f"not a {CLUSTER_SCHEME}:// URL: {url!r}")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"{url!r}: a Redis Cluster has database 0 only, not {parts.path.strip('/')!r}")
    nodes = []
    for node in parts.netloc.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: expected host:port[,host:port...], got {node!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def cluster_client(url: str, socket_timeout_s: float, connect_timeout_s: float, **redis_kwargs: Any) -> Any:
    """A ``redis.cluster.RedisCluster`` on the nodes of ``url``, without client-side retries (a retry would
    multiply the timeout on the request path). ``redis_kwargs`` go to every node's client (e.g. a
    ``connection_class`` that counts round trips)."""
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s, retry=Retry(NoBackoff(), 0),
        require_full_coverage=False, decode_responses=False, **redis_kwargs,
    )


class NodePipelines:
    """The calls :class:`RedisStore` makes of its client (``mget``, ``mset``, ``pipeline().set().execute()``,
    ``close``), answered by one pipeline per cluster node touched (module docstring). A node that fails is
    skipped for ``retry_after_s``; what failed waits in :meth:`take_failures` for the store to count.

    The ``RedisCluster`` is built on first use, not at start: a cluster that is down when a replica starts must
    cost misses, not a failed model load."""

    def __init__(self, connect: Callable[[], Any], retry_after_s: float):
        self._connect = connect
        self._cluster: Any | None = None
        self._retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._skip_until: dict[str, float] = {}  # node name ("host:port") -> time.monotonic() it is asked again
        self._failures: list[BaseException] = []
        self._stale = False  # the slot map must be re-read (a node failed, or answered MOVED)
        self.round_trips = 0  # node pipelines that were answered
        # RedisClusterException (no slot map, an uncovered slot) is no RedisError, yet it is Redis failing too
        self._errors = (*_redis_errors(), *_cluster_errors())

    def _client(self) -> Any:
        """The cluster client, its slot map re-read when a node failed; raises ConnectionError when it cannot be."""
        with self._lock:
            try:
                if self._cluster is None:
                    self._cluster = self._connect()
                elif self._stale:
                    self._cluster.nodes_manager.initialize()  # CLUSTER SLOTS from a live node: failovers, moved slots
                    self._stale = False
            except self._errors as error:
                raise ConnectionError(f"Redis Cluster unreachable: {type(error).__name__}: {error}") from None
            return self._cluster

    def _by_node(self, cluster: Any, keys: Sequence[bytes]) -> dict[str, tuple[Any, list[int]]]:
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, key in enumerate(keys):
            node = cluster.get_node_from_key(key)
            groups.setdefault(node.name, (node, []))[1].append(i)
        return groups

    def _run(self, keys: Sequence[bytes], add: Callable[[Any, int], None]) -> list[Any]:
        """Per node touched, one pipeline of ``add(pipe, i)`` for its keys; replies in key order (None where a
        node was skipped or failed, or a command was refused). Raises when every node touched failed."""
        cluster = self._client()
        replies: list[Any] = [None] * len(keys)
        try:
            groups = self._by_node(cluster, keys)
        except self._errors as error:  # a slot no node covers (the map is being re-read)
            self._stale = True
            raise ConnectionError(f"Redis Cluster slot map: {error}") from None
        failed = 0
        for name, (node, indices) in groups.items():
            if time.monotonic() < self._skip_until.get(name, 0.0):
                failed += 1
                continue
            pipe = cluster.get_redis_connection(node).pipeline(transaction=False)
            for i in indices:
                add(pipe, i)
            try:
                answers = pipe.execute(raise_on_error=False)
            except self._errors as error:  # this node only: the others' keys still count
                failed += 1
                self._node_failed(name, error)
                continue
            with self._lock:
                self.round_trips += 1
            for i, answer in zip(indices, answers):
                if isinstance(answer, Exception):  # MOVED/ASK (a slot changed hands), CLUSTERDOWN: a miss
                    self._stale = True
                    continue
                replies[i] = answer
        if groups and failed == len(groups):
            raise self._last_failure() if self._failures else ConnectionError("every Redis Cluster node is skipped")
        return replies

    def _node_failed(self, name: str, error: BaseException) -> None:
        with self._lock:
            self._skip_until[name] = time.monotonic() + self._retry_after_s
            self._failures.append(error)
            self._stale = True

    def _last_failure(self) -> BaseException:
        with self._lock:
            return self._failures.pop()  # RedisStore counts the one it is raised with

    def take_failures(self) -> list[BaseException]:
        """The node failures since the last call (the store counts them as errors)."""
        with self._lock:
            failures, self._failures = self._failures, []
            return failures

    def skipping(self) -> bool:
        """True while some node is inside its retry window."""
        now = time.monotonic()
        return any(until > now for until in self._skip_until.values())

    # -- what RedisStore calls ----------------------------------------------------------------------
    def mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._run(keys, lambda pipe, i: pipe.get(keys[i]))

    def mset(self, items: dict[bytes, bytes]) -> None:
        self.set_many(items, ex=None)

    def set_many(self, items: dict[bytes, bytes], ex: int | None) -> None:
        keys, values = list(items), list(items.values())
        self._run(keys, lambda pipe, i: pipe.set(keys[i], values[i], ex=ex))

    def pipeline(self, transaction: bool = False) -> "_SetPipeline":
        return _SetPipeline(self)

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()


class _SetPipeline:
    """``pipe.set(key, value, ex=...)`` ... ``pipe.execute()``: RedisStore's write with a TTL, per node."""

    def __init__(self, nodes: NodePipelines):
        self._nodes = nodes
        self._items: dict[bytes, bytes] = {}
        self._ex: int | None = None

    def set(self, key: bytes, value: bytes, ex: int | None = None) -> None:
        self._items[key] = value
        self._ex = ex

    def execute(self) -> None:
        self._nodes.set_many(self._items, self._ex)


class RedisClusterStore(RedisStore):
    """:class:`RedisStore` on Redis Cluster (module docstring): one pipeline per node touched; a lost node's keys
    are misses while the other nodes answer."""

    def __init__(self, config: RedisStoreConfig, client: NodePipelines | None = None, **redis_kwargs: Any):
        if client is None:
            cluster_nodes(config.url)  # a malformed URL fails at start, not as a miss per request
            client = NodePipelines(
                lambda: cluster_client(config.url, config.socket_timeout_ms / 1000.0,
                                       config.connect_timeout_ms / 1000.0, **redis_kwargs),
                config.retry_after_s,
            )
        super().__init__(config, client=client)

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        out = super().get_many(keys)
        self._count_node_failures()
        return out

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        super().put_many(keys, vectors)
        self._count_node_failures()

    def stats(self) -> RedisStats:
        snapshot = super().stats()
        snapshot.round_trips = self._client.round_trips  # per node pipeline, not per batch
        return snapshot

    def _succeeded(self) -> None:
        """Under the lock, after a batch some node answered: healthy again only once no node is skipped."""
        self._stats.round_trips += 1
        if self._stats.degraded and not self._client.skipping():
            self._stats.degraded = False
            self._stats.recoveries += 1

    def _count_node_failures(self) -> None:
        """A node's failure that the batch survived: counted as an error, and degraded while it is skipped."""
        failures = self._client.take_failures()
        skipping = self._client.skipping()
        with self._lock:
            self._stats.errors += len(failures)
            if failures:
                self.last_error = f"{type(failures[-1]).__name__}: {failures[-1]}"
            if skipping and not self._stats.degraded:
                self._stats.degraded = True
                self._stats.degraded_total += 1


def _cluster_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisClusterException
    except ImportError:
        return ()
    return (RedisClusterException,)


def make_redis_tier(config: RedisStoreConfig) -> RedisStore:
    """The Redis tier ``config.url`` names: Redis Cluster for ``redis+cluster://``, else one node."""
    return RedisClusterStore(config) if is_cluster_url(config.url) else RedisStore(config)
