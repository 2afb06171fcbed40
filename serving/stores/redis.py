"""L2 tier: scene embeddings in Redis, shared by every Triton replica (a :class:`~larr.serving.stores.protocol.SceneStore`).

::

    store = RedisStore(RedisStoreConfig(url="redis://127.0.0.1:6379/0", ttl_s=7 * 86400))
    vectors = store.get_many(keys)              # ONE round trip (MGET); (D,) float32 or None per key
    store.put_many(keys, embeddings)            # ONE round trip (pipelined SET [EX ttl], or MSET); (M, D)
    store.stats()                               # RedisStats: hits, misses, errors, degraded, ...

Redis is an optional tier and must never fail a request (docs/design.md). Any Redis error or timeout
(socket timeout a few ms by default) turns ``get_many`` into all misses and drops ``put_many``'s
write; the failure is counted (``errors``, ``degraded``, ``degraded_total``) and Redis is then skipped
for ``retry_after_s`` seconds, so a dead Redis costs no timeout per request: the feature cache falls
back to L1 and the embedder. The first call after that window tries again, and a success clears
``degraded``: the store reconnects by itself (redis-py reopens its pooled connections lazily). redis-py's
own retries are off — a retry would multiply the timeout on the request path.

Layout. Key: ``{key_prefix}{embedder_version}:{feature}:{digest(text)}`` where the digest is xxh3-128
(``xxhash``, if importable) or BLAKE2b-128 (hex): replicas share rows only if all have ``xxhash`` or none
does (a mismatch costs misses, never a wrong vector). Value::

    uint32 little-endian  n = len(text as UTF-8)
    n bytes               the text            (verified on read: a digest collision reads as a miss)
    2·D bytes             the row, float16 little-endian

float16 halves Redis memory and the bytes on the wire against float32. For L2-normalised 64-dim
vectors the error is at most 2^-12 = 2.4e-4 per component (components lie in [-1, 1], float16 keeps
11 significant bits); measured on 10,000 random unit vectors: max 2.0e-4, median 1.1e-5, cosine to the
float32 vector > 1 - 3e-7 (``tests/unit/serving/stores/test_redis.py`` checks this against numpy). Rows with a
value outside float16's range (|x| > 65504) are not stored (``dropped_writes``): they are embedded again.

Operators bound the memory on the server, not here: the store never FLUSHes and never deletes.
Set, in ``redis.conf`` or with ``CONFIG SET``::

    maxmemory 2gb
    maxmemory-policy allkeys-lru      # evict the least recently used scene rows when full

With ``allkeys-lru`` Redis is itself an LRU over every replica's traffic; ``ttl_s`` (SET ... EX) is
optional on top of it. A new embedder version writes new keys; the old ones age out under LRU/TTL.

``stats()`` does no I/O: ``entries``/``bytes`` stay 0 (Redis's ``INFO keyspace``/``INFO memory`` are
the truth). ``redis`` is imported when a store is built, so this module imports without it.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import xxhash

from larr.serving.stores.protocol import SceneKey, StoreStats


def text_digest(text: bytes) -> str:
    """128-bit hex digest of a key's text (xxh3-128, a dependency the LRU and the scene table use too; the Redis
    tier keeps the text beside the vector and verifies it, so a collision is a miss, never a wrong vector)."""
    return xxhash.xxh3_128_hexdigest(text)


ROW_DTYPE = np.dtype("<f2")  # what Redis holds; reads come back as float32
_TEXT_LEN = struct.Struct("<I")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class RedisStoreConfig:
    """Where the L2 tier lives and how little a request may wait for it.

    Attributes:
        url: redis-py URL, ``redis://host:port/db`` (``rediss://`` for TLS, ``unix:///path.sock``).
        socket_timeout_ms: the longest one socket read or write may block before the call counts as
            a failure; a few ms on a LAN (a hung Redis costs a request about this much, once per
            retry window). Loopback MGET of 1,000 rows measured ~0.5 ms, ~2 ms with hashing and decoding.
        connect_timeout_ms: the longest opening a connection may take.
        key_prefix: namespaces this deployment's keys inside a shared Redis.
        ttl_s: expiry of written rows in seconds (``SET ... EX``); None keeps them until LRU eviction.
        retry_after_s: after a failure, Redis is skipped (all misses, writes dropped) for this long.
    """

    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_ms: float = 5.0
    connect_timeout_ms: float = 50.0
    key_prefix: str = "larr:scene:"
    ttl_s: int | None = None
    retry_after_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("RedisStoreConfig.url must not be empty")
        for name in ("socket_timeout_ms", "connect_timeout_ms"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"RedisStoreConfig.{name} must be a positive number of ms, got {value!r}")
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise ValueError(f"RedisStoreConfig.ttl_s must be None or > 0, got {self.ttl_s!r}")
        if not (self.retry_after_s >= 0 and math.isfinite(self.retry_after_s)):
            raise ValueError(f"RedisStoreConfig.retry_after_s must be >= 0, got {self.retry_after_s!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, str], prefix: str = "redis_") -> RedisStoreConfig:
        """From string parameters (Triton model-config ``parameters``), e.g. ``{"redis_url": "redis://..."}``.

        Only keys ``prefix + field`` are read; missing ones keep their defaults; ``ttl_s`` of ``""``
        or ``"none"`` means no expiry. Unknown ``prefix``-ed keys raise (a typo must not pass silently).
        """
        known = {prefix + f.name: f for f in fields(cls)}
        unknown = sorted(k for k in params if k.startswith(prefix) and k not in known)
        if unknown:
            raise ValueError(f"unknown Redis store parameters {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, field in known.items():
            if key not in params:
                continue
            raw = str(params[key]).strip()
            if field.name == "ttl_s":
                values[field.name] = None if raw.lower() in ("", "none") else int(raw)
            elif field.name in ("url", "key_prefix"):
                values[field.name] = raw
            else:
                values[field.name] = float(raw)
        return cls(**values)


@dataclass
class RedisStats(StoreStats):
    """:class:`StoreStats` plus the tier's health (counters are monotone; ``degraded`` is a gauge).

    ``misses`` include the lookups answered without asking Redis (errors, or skipped while degraded).
    """

    errors: int = 0  # Redis calls that failed (error or timeout)
    degraded: bool = False  # now: Redis is being skipped until the retry window ends
    degraded_total: int = 0  # times the store went from healthy to degraded
    recoveries: int = 0  # times a call succeeded again after being degraded
    skipped: int = 0  # get_many/put_many calls not sent because the store was degraded
    dropped_writes: int = 0  # rows not written (error, degraded, or not representable in float16)
    collisions: int = 0  # rows whose stored text differed from the key's (digest collision): misses
    corrupt: int = 0  # values that did not parse as a row: misses
    round_trips: int = 0  # successful round trips to Redis


class RedisStore:
    """Scene embeddings in Redis (module docstring: layout, failure handling, eviction).

    Thread-safe: redis-py's client pools connections, and the counters are updated under a lock, so
    a background embedding thread may ``put_many`` while requests ``get_many``.

    Args:
        config: where Redis is and the timeouts.
        client: a ready ``redis.Redis`` to use instead of one built from ``config.url`` (tests, or a
            client shared with other code); the config's timeouts then are the client's business.
    """

    writable = True  # TieredStore convention: a tier that accepts put_many (promotion, write-through)

    def __init__(self, config: RedisStoreConfig, client: Any | None = None):
        self.config = config
        if client is None:
            client = _make_client(config)
        self._client = client
        self._lock = threading.Lock()
        self._stats = RedisStats()
        self._skip_until = 0.0  # time.monotonic() before which Redis is not asked
        self._redis_errors = _redis_errors()
        self.last_error: str | None = None  # the latest failure, for logs

    # -- keys and values ----------------------------------------------------------------------
    def redis_key(self, key: SceneKey) -> bytes:
        """The Redis key of ``key``: prefix, embedder version, feature, digest of the text."""
        digest = text_digest(key.text.encode("utf-8"))
        return f"{self.config.key_prefix}{key.embedder_version}:{key.feature}:{digest}".encode("utf-8")

    @staticmethod
    def encode_value(text: str, row: np.ndarray) -> bytes:
        """The stored bytes of one row (D,) with its text (module docstring: layout)."""
        encoded = text.encode("utf-8")
        return _TEXT_LEN.pack(len(encoded)) + encoded + np.ascontiguousarray(row, dtype=ROW_DTYPE).tobytes()

    @staticmethod
    def row_bytes(text: str, value: bytes) -> bytes | str:
        """The float16 row bytes stored in ``value`` for ``text``, or why not: ``"collision"``/``"corrupt"``."""
        if len(value) < _TEXT_LEN.size:
            return "corrupt"
        (n,) = _TEXT_LEN.unpack_from(value)
        start = _TEXT_LEN.size + n
        size = len(value) - start
        if size <= 0 or size % ROW_DTYPE.itemsize:
            return "corrupt"
        if value[_TEXT_LEN.size:start] != text.encode("utf-8"):
            return "collision"
        return value[start:]

    # -- SceneStore -----------------------------------------------------------------------------
    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        """One (D,) float32 vector or None per key, in order, from ONE ``MGET``; all None if Redis fails."""
        if not keys:
            return []
        misses: list[np.ndarray | None] = [None] * len(keys)
        if not self._may_call():
            with self._lock:
                self._stats.misses += len(keys)
            return misses
        redis_keys = [self.redis_key(k) for k in keys]
        try:
            values = self._client.mget(redis_keys)
        except self._redis_errors as error:  # the optional tier failing is a miss, never a request error
            self._failed(error)
            with self._lock:
                self._stats.misses += len(keys)
            return misses
        out: list[np.ndarray | None] = list(misses)
        found = [None if v is None else self.row_bytes(k.text, v) for k, v in zip(keys, values)]
        by_size: dict[int, list[int]] = {}  # rows of one size decode in ONE numpy call (~1 us/row saved)
        for i, row in enumerate(found):
            if isinstance(row, bytes):
                by_size.setdefault(len(row), []).append(i)
        for size, indices in by_size.items():
            # astype copies: the caller owns float32 rows, not views on Redis's reply
            block = np.frombuffer(b"".join(found[i] for i in indices), dtype=ROW_DTYPE).astype(np.float32)
            for i, row in zip(indices, block.reshape(len(indices), size // ROW_DTYPE.itemsize)):
                out[i] = row
        hits = sum(len(indices) for indices in by_size.values())
        with self._lock:
            self._succeeded()
            self._stats.hits += hits
            self._stats.misses += len(keys) - hits
            self._stats.collisions += found.count("collision")
            self._stats.corrupt += found.count("corrupt")
        return out

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        """Write ``vectors`` (len(keys), D) in ONE round trip; dropped (and counted) if Redis fails."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"put_many needs vectors of shape ({len(keys)}, D), got {vectors.shape}")
        if not keys:
            return
        # float16 saturates to inf above 65504: such a row is not stored (embedded again next time)
        fits = np.all(np.isfinite(vectors) & (np.abs(vectors) <= _FLOAT16_MAX), axis=1)
        items = {self.redis_key(k): self.encode_value(k.text, row) for k, row, ok in zip(keys, vectors, fits) if ok}
        dropped = int((~fits).sum())
        if not items:
            with self._lock:
                self._stats.dropped_writes += dropped
            return
        if not self._may_call():
            with self._lock:
                self._stats.dropped_writes += len(keys)
            return
        try:
            if self.config.ttl_s is None:
                self._client.mset(items)
            else:
                pipe = self._client.pipeline(transaction=False)  # no MULTI/EXEC: one send, one read
                for redis_key, value in items.items():
                    pipe.set(redis_key, value, ex=self.config.ttl_s)
                pipe.execute()
        except self._redis_errors as error:  # a lost write only costs a later miss
            self._failed(error)
            with self._lock:
                self._stats.dropped_writes += len(keys)
            return
        with self._lock:
            self._succeeded()
            self._stats.dropped_writes += dropped

    def stats(self) -> RedisStats:
        """A snapshot of the counters (no I/O). ``degraded`` stays True until a call to Redis succeeds."""
        with self._lock:
            snapshot = RedisStats(**{f.name: getattr(self._stats, f.name) for f in fields(RedisStats)})
        return snapshot

    def close(self) -> None:
        """Close the pooled connections (a later call would reopen them)."""
        self._client.close()

    # -- health -----------------------------------------------------------------------------------
    def _may_call(self) -> bool:
        """False while inside the retry window after a failure (the call is then skipped)."""
        if time.monotonic() >= self._skip_until:
            return True
        with self._lock:
            self._stats.skipped += 1
        return False

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self._stats.errors += 1
            if not self._stats.degraded:
                self._stats.degraded = True
                self._stats.degraded_total += 1
            self._skip_until = time.monotonic() + self.config.retry_after_s
            self.last_error = f"{type(error).__name__}: {error}"

    def _succeeded(self) -> None:
        """Called under the lock after a round trip that worked."""
        self._stats.round_trips += 1
        if self._stats.degraded:
            self._stats.degraded = False
            self._stats.recoveries += 1


def _redis_errors() -> tuple[type[BaseException], ...]:
    """What a failing Redis raises: redis-py's errors (timeouts, refused connections, OOM replies) and
    socket errors. Anything else is a bug and propagates."""
    try:
        from redis.exceptions import RedisError
    except ImportError:  # a duck-typed client without redis-py installed
        return (OSError,)
    return (RedisError, OSError)


def _make_client(config: RedisStoreConfig) -> Any:
    """A redis-py client with the config's timeouts and no client-side retries (hiredis if installed)."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as error:
        raise ImportError("RedisStore needs the redis client: pip install 'redis[hiredis]>=5' (the serve or redis extra)") from error
    return redis.Redis.from_url(
        config.url,
        socket_timeout=config.socket_timeout_ms / 1000.0,
        socket_connect_timeout=config.connect_timeout_ms / 1000.0,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=False,
    )
