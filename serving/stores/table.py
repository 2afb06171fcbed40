"""``TableStore``: the precomputed scene table (``larr embed-scenes``) as a read-only :class:`SceneStore`.

The table is every scene text known offline (the dataset's splits plus texts from logs), embedded in
big batches by the very embedder the server runs, so that at serving time a known text costs a dict
lookup and a row copy instead of an embedder call::

    store = TableStore.load(version_dir, embedder_version="3f2a9c0d1e4b")  # raises on another embedder
    store.get_many([scene_key("3f2a9c0d1e4b", 0, "heavy rain", tokenizer.max_text_chars)])  # [(D,) float32]

On disk (names in :mod:`larr.contract`)::

    scene_table.safetensors   one tensor "embeddings" (N, D) float32 (or float16), row i is key i below
    scene_table.json          {"format": 1, "embedder_version", "dim", "dtype", "rows", "features": [K names],
                               "max_text_chars", "hash": "xxh64", "keys": [[feature index, text, "xxh64 hex"], ...]}

The rows are memory-mapped, not read: a large table costs page cache, shared by every instance on the
host, and only the rows that are asked for are ever touched. The safetensors header is parsed here
(8-byte length + JSON), so the serving path needs neither torch nor the safetensors package.

Read-only: :meth:`TableStore.put_many` ignores what it is given. A text unseen offline is the tier
above's business (an LRU in front of the table keeps it); ignoring instead of raising keeps a
write-through over every tier from failing a request because one tier is immutable.

Lookups go through each key's xxhash64 (stored in the index, re-checked at load) and then compare the
whole text and feature of the row found, so a hash collision is a miss or the right row, never a wrong one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

from larr.contract import SCENE_TABLE_FILE, SCENE_TABLE_INDEX_FILE
from larr.serving.stores.protocol import SceneKey, StoreStats

TABLE_FORMAT = 1
TABLE_TENSOR = "embeddings"  # the one tensor in scene_table.safetensors
TABLE_HASH = "xxh64"
# safetensors dtype names <-> NumPy, for the two row types a table may hold
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


class SceneTableError(ValueError):
    """A scene table is missing, malformed, or was embedded by another embedder than the served one."""


def table_key_hash(feature: int, text: str) -> int:
    """xxhash64 of one table key: UTF-8 of ``f"{feature}\\x00{text}"`` (feature = index in the table's order).

    The index stores it as 16 hex digits; any reader (a Redis loader, another language) can recompute it.
    """
    return xxhash.xxh64_intdigest(f"{feature}\x00{text}".encode("utf-8"))


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """``(header, data_start)`` of a safetensors file: the JSON header and the byte where tensor data begins."""
    with Path(path).open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise SceneTableError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SceneTableError(f"{path}: not a safetensors file (unreadable header: {error})") from None
    return header, 8 + length


def map_table_rows(path: Path) -> np.ndarray:
    """The ``embeddings`` tensor of ``scene_table.safetensors``, memory-mapped read-only: (N, D)."""
    header, data_start = read_safetensors_header(path)
    entry = header.get(TABLE_TENSOR)
    if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
        raise SceneTableError(f"{path}: needs a tensor {TABLE_TENSOR!r} of dtype F32 or F16, has {header.get(TABLE_TENSOR)}")
    dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
    rows, dim = entry["shape"]
    start, end = entry["data_offsets"]
    if end - start != rows * dim * dtype.itemsize:
        raise SceneTableError(f"{path}: {TABLE_TENSOR} holds {end - start} bytes for shape {entry['shape']}")
    if rows == 0:  # np.memmap cannot map zero bytes
        return np.zeros((0, dim), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + start, shape=(rows, dim))


class TableStore:
    """Read-only :class:`~larr.serving.stores.protocol.SceneStore` over a scene table (module docstring)."""

    writable = False  # the tiered store's convention: no write-through or promotion into this tier

    def __init__(
        self,
        embedder_version: str,
        features: Sequence[str],
        keys: Sequence[tuple[int, str]],
        rows: np.ndarray,
        key_bytes: int = 0,
    ):
        if rows.ndim != 2 or len(rows) != len(keys):
            raise SceneTableError(f"{len(keys)} keys for rows of shape {rows.shape}")
        self.embedder_version = embedder_version
        self.features = tuple(features)
        self.rows = rows  # (N, D), float32 or float16, often a read-only memmap
        self._features = np.array([feature for feature, _ in keys], dtype=np.int32)  # (N,)
        self._texts = [text for _, text in keys]  # (N,): the whole texts, compared on every hit
        # hash -> row, or a tuple of rows in the (astronomically rare) case two keys share a hash
        self._rows_by_hash: dict[int, int | tuple[int, ...]] = {}
        for row, (feature, text) in enumerate(keys):
            digest = table_key_hash(feature, text)
            previous = self._rows_by_hash.get(digest)
            if previous is None:
                self._rows_by_hash[digest] = row
            else:
                self._rows_by_hash[digest] = (*((previous,) if isinstance(previous, int) else previous), row)
        self._key_bytes = key_bytes
        self._stats = StoreStats(entries=len(keys), bytes=int(rows.nbytes) + key_bytes)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        embedder_version: str,
        scene_features: Sequence[str] | None = None,
        max_text_chars: int | None = None,
    ) -> "TableStore":
        """The table in ``directory``; raises :class:`SceneTableError` unless it fits the served model.

        ``embedder_version`` is the served embedder's (the ``embedder_version`` model-config parameter):
        rows of another embedder are other vectors, so a mismatch is refused at start, not served.
        ``scene_features`` (the published order) and ``max_text_chars`` (the tokenizer's) are checked when
        given: keys carry a feature *index*, and texts are clipped before keying.
        """
        directory = Path(directory)
        index_path, table_path = directory / SCENE_TABLE_INDEX_FILE, directory / SCENE_TABLE_FILE
        for path in (index_path, table_path):
            if not path.exists():
                raise SceneTableError(f"{path}: missing; build the table with `larr embed-scenes`")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SceneTableError(f"{index_path}: not valid JSON ({error})") from None
        if index.get("format") != TABLE_FORMAT or index.get("hash") != TABLE_HASH:
            raise SceneTableError(
                f"{index_path}: format {index.get('format')!r} / hash {index.get('hash')!r}; "
                f"this server reads format {TABLE_FORMAT} / {TABLE_HASH}"
            )
        if index["embedder_version"] != embedder_version:
            raise SceneTableError(
                f"{directory}: the scene table was embedded by embedder {index['embedder_version']}, the served "
                f"embedder is {embedder_version}; rebuild it with `larr embed-scenes` for this embedder"
            )
        features = tuple(index["features"])
        if scene_features is not None and tuple(scene_features) != features:
            raise SceneTableError(f"{index_path}: table features {features} differ from the served {tuple(scene_features)}")
        if max_text_chars is not None and index["max_text_chars"] != max_text_chars:
            raise SceneTableError(
                f"{index_path}: texts were clipped to {index['max_text_chars']} characters, the served tokenizer "
                f"clips to {max_text_chars}"
            )
        rows = map_table_rows(table_path)  # (N, D)
        if rows.shape != (index["rows"], index["dim"]):
            raise SceneTableError(f"{table_path}: rows of shape {rows.shape}, the index says ({index['rows']}, {index['dim']})")
        keys: list[tuple[int, str]] = []
        key_bytes = 0
        for row, (feature, text, digest) in enumerate(index["keys"]):
            if not 0 <= feature < len(features):
                raise SceneTableError(f"{index_path}: key {row} names feature {feature}; the table has {len(features)}")
            if int(digest, 16) != table_key_hash(feature, text):  # another hash definition would be all misses
                raise SceneTableError(f"{index_path}: key {row} ({features[feature]}, {text!r}) has a wrong hash {digest}")
            keys.append((feature, text))
            key_bytes += len(text.encode("utf-8"))
        return cls(embedder_version, features, keys, rows, key_bytes=key_bytes)

    def _row(self, key: SceneKey) -> int | None:
        if key.embedder_version != self.embedder_version:
            return None
        found = self._rows_by_hash.get(table_key_hash(key.feature, key.text))
        for row in (found,) if isinstance(found, int) else found or ():
            if self._features[row] == key.feature and self._texts[row] == key.text:  # never trust the hash alone
                return row
        return None

    def get_many(self, keys: Sequence[SceneKey]) -> list[np.ndarray | None]:
        """One (D,) float32 vector (a copy, not a view of the mapped file) or None per key, in order."""
        out: list[np.ndarray | None] = []
        for key in keys:
            row = self._row(key)
            if row is None:
                self._stats.misses += 1
                out.append(None)
            else:
                self._stats.hits += 1
                out.append(np.array(self.rows[row], dtype=np.float32))
        return out

    def put_many(self, keys: Sequence[SceneKey], vectors: np.ndarray) -> None:
        """Ignored: the table is immutable between exports; the tier above keeps new texts (module docstring)."""

    def stats(self) -> StoreStats:
        s = self._stats
        return StoreStats(hits=s.hits, misses=s.misses, evictions=0, entries=s.entries, bytes=s.bytes)

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, key: SceneKey) -> bool:
        return self._row(key) is not None
