"""``larr load-store``: a built scene table bulk-loaded into the shared Redis tier, so every replica hits it.

    larr load-store --table RUN/model_repository/feature_cache/1 --redis-url redis://10.0.0.5:6379/0
    larr load-store --table DIR/shards --redis-url redis+cluster://10.0.0.5:7000,10.0.0.6:7000/0 --only-new
    larr load-store --table DIR --redis-url ... --rate 50000 --key-prefix larr:scene: --ttl-s 604800

Texts embedded offline after an export (``larr embed-scenes`` over today's logs) reach the replicas without a
re-export: a replica's Redis tier reads exactly these keys and values, since both are made by the tier's own
:meth:`RedisStore.redis_key` and :meth:`RedisStore.encode_value` (float16 rows, the text beside them).

``--table`` is a table folder (``scene_table.json`` + ``.safetensors``, :mod:`larr.serving.stores.table`) or a
Ray engine's shards folder (``_manifest.json`` + Parquet parts, :mod:`larr.export.ray_engine`). Rows go in
pipelined batches (``--batch-size`` per round trip; a cluster client splits each batch by node), at most
``--rate`` rows/s so a load does not crowd out live traffic; ``--only-new`` writes with ``SET NX``: a key
Redis holds already is left as it is (and counted). Unlike the serving tier, which turns a Redis failure into a
miss, a failed write here is an error: the command stops with a non-zero exit and says how far it got.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from larr.contract import SCENE_TABLE_INDEX_FILE
from larr.errors import UserError
from larr.serving.stores.protocol import SceneKey
from larr.serving.stores.redis import RedisStore, RedisStoreConfig
from larr.serving.stores.table import TableStore

SHARD_MANIFEST = "_manifest.json"  # larr.export.ray_engine's (not imported: that module is the Ray engine's)


class LoadStoreError(UserError, ValueError):
    """A table that is not one, or a Redis that refused the load; the message says which and how far it got."""


@dataclass(frozen=True)
class LoadOptions:
    """How ``larr load-store`` writes; every field is a CLI flag."""

    batch_size: int = field(default=1000, metadata={"help": "rows per pipelined round trip"})
    rate: float = field(default=0.0, metadata={"help": "at most this many rows/s (0: as fast as Redis takes them)"})
    only_new: bool = field(default=False, metadata={"help": "SET NX: leave the keys Redis already holds"})
    key_prefix: str = field(default=RedisStoreConfig.key_prefix, metadata={"help": "the replicas' redis_key_prefix"})
    ttl_s: int | None = field(default=None, metadata={"help": "expiry of the loaded rows (default: none, LRU evicts)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0 rows/s, got {self.rate}")
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {self.ttl_s}")


@dataclass(frozen=True)
class LoadResult:
    rows: int  # rows of the table
    written: int  # rows Redis now holds because of this load
    existing: int  # rows left alone (--only-new) because Redis held the key already
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.rows} rows in {self.seconds:.2f} s ({self.rows_per_s:,.0f} rows/s): {self.written} written, "
                f"{self.existing} already in Redis")


# --------------------------------------------------------------------------------------------- reading a table


def table_batches(directory: Path, batch_size: int) -> tuple[str, int, Iterator[tuple[list[SceneKey], np.ndarray]]]:
    """``(embedder_version, rows, batches of (keys, (B, D) float32))`` of a table folder or a shards folder."""
    if (directory / SCENE_TABLE_INDEX_FILE).exists():
        index = json.loads((directory / SCENE_TABLE_INDEX_FILE).read_text(encoding="utf-8"))
        version = index["embedder_version"]
        table = TableStore.load(directory, version)  # checks the format and every key's hash; rows memory-mapped
        keys = [SceneKey(version, int(feature), text) for feature, text, _ in index["keys"]]

        def from_table():
            for first in range(0, len(keys), batch_size):
                yield keys[first : first + batch_size], np.asarray(table.rows[first : first + batch_size], np.float32)

        return version, len(keys), from_table()
    if (directory / SHARD_MANIFEST).exists():
        return shard_batches(directory, batch_size)
    raise LoadStoreError(f"{directory}: neither a scene table ({SCENE_TABLE_INDEX_FILE}) nor a shards folder ({SHARD_MANIFEST})")


def shard_batches(directory: Path, batch_size: int) -> tuple[str, int, Iterator[tuple[list[SceneKey], np.ndarray]]]:
    """The Parquet shards of ``larr embed-scenes --engine ray``, read one part at a time (never all in memory)."""
    import pyarrow.parquet as pq

    version = json.loads((directory / SHARD_MANIFEST).read_text(encoding="utf-8"))["embedder_version"]
    parts = sorted(directory.glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)

    def from_shards():
        for part in parts:
            table = pq.read_table(part)
            dim = table.schema.field("embedding").type.list_size
            vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)  # (B, D)
            features, texts = table.column("feature").to_pylist(), table.column("text").to_pylist()
            for first in range(0, len(texts), batch_size):
                keys = [SceneKey(version, f, t) for f, t in zip(features[first : first + batch_size], texts[first : first + batch_size])]
                yield keys, vectors[first : first + batch_size]

    return version, rows, from_shards()


# --------------------------------------------------------------------------------------------- writing


def bulk_client(url: str, timeout_s: float = 5.0):
    """A redis-py client for a bulk load: timeouts in seconds, not the serving tier's milliseconds."""
    from larr.serving.stores.redis_cluster import cluster_client, is_cluster_url

    if is_cluster_url(url):
        return cluster_client(url, socket_timeout_s=timeout_s, connect_timeout_s=timeout_s)
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def write_batch(client, namer: RedisStore, keys: list[SceneKey], vectors: np.ndarray, options: LoadOptions) -> int:
    """One pipelined round trip (per node, on a cluster) of SET [EX] [NX]; returns the rows written."""
    if not np.all(np.abs(vectors) <= np.finfo(np.float16).max):  # unit-norm rows never are; a corrupt table is
        raise LoadStoreError(f"rows outside float16's range among {[k.text for k in keys][:3]}...: not a scene table")
    pipe = client.pipeline(transaction=False)  # no MULTI/EXEC: one send, one read
    for key, row in zip(keys, vectors):
        pipe.set(namer.redis_key(key), namer.encode_value(key.text, row), ex=options.ttl_s, nx=options.only_new)
    return sum(1 for reply in pipe.execute() if reply)


def load_table(directory: str | Path, url: str, options: LoadOptions | None = None, client=None) -> LoadResult:
    """Write every row of the table in ``directory`` into the Redis at ``url`` (module docstring)."""
    from redis.exceptions import RedisError
    from tqdm.auto import tqdm

    options = options or LoadOptions()
    _, rows, batches = table_batches(Path(directory), options.batch_size)
    client = client if client is not None else bulk_client(url)
    namer = RedisStore(RedisStoreConfig(url=url, key_prefix=options.key_prefix), client=client)  # keys and values
    bar = tqdm(total=rows, desc="load store", unit="row", disable=not options.progress, dynamic_ncols=True)
    done = written = 0
    start = time.perf_counter()
    try:
        for keys, vectors in batches:
            if options.rate:  # the rate limit: row `done` is not sent before start + done / rate
                time.sleep(max(0.0, start + done / options.rate - time.perf_counter()))
            written += write_batch(client, namer, keys, vectors, options)
            done += len(keys)
            bar.update(len(keys))
    except (RedisError, OSError) as error:
        raise LoadStoreError(f"{url}: {type(error).__name__}: {error} after {done} of {rows} rows") from None
    finally:
        bar.close()
    return LoadResult(rows, written, done - written, time.perf_counter() - start)


def configure_load_store_parser(parser: argparse.ArgumentParser) -> None:
    defaults = LoadOptions()
    add = parser.add_argument
    add("--table", required=True, type=Path, help="a scene table folder, or the shards folder of `embed-scenes --engine ray`")
    add("--redis-url", required=True, help="redis://host:port/db, or redis+cluster://host:port,host:port/0 (Redis Cluster)")
    add("--batch-size", type=int, default=defaults.batch_size, help="rows per pipelined round trip")
    add("--rate", type=float, default=defaults.rate, help="at most this many rows/s (0: no limit)")
    add("--only-new", action="store_true", help="SET NX: leave the keys Redis already holds")
    add("--key-prefix", default=defaults.key_prefix, help="the replicas' redis_key_prefix")
    add("--ttl-s", type=int, help="expiry of the loaded rows in seconds (default: none; Redis's LRU evicts)")
    add("--no-progress", action="store_true", help="no progress bar")


def run_load_store(args: argparse.Namespace) -> int:
    """Run ``larr load-store``; 2 with a message on stderr for a bad table or a failed load."""
    try:
        options = LoadOptions(batch_size=args.batch_size, rate=args.rate, only_new=args.only_new,
                              key_prefix=args.key_prefix, ttl_s=args.ttl_s, progress=not args.no_progress)
        result = load_table(args.table, args.redis_url, options)
    except (ValueError, FileNotFoundError) as error:  # LoadStoreError, SceneTableError, bad flags
        print(f"larr load-store: {error}", file=sys.stderr)
        return 2
    print(result.summary(), flush=True)
    return 0
