"""The scene-feature cache behind the ``feature_cache`` Triton model (importable and tested without Triton).

One ``execute()`` of the Triton model handles many requests, each carrying K scene texts. The cache
turns them into ``SCENE_EMB`` (K, D) and ``SCENE_IDS`` (K,) per request in three phases, so that the
adapter can send **one** embedder call for the misses of *all* requests::

    batch = cache.begin([cache.parse(texts) for texts in requests])   # parse errors stay per request
    if batch.missing:
        input_ids, attention_mask = cache.tokenize(batch.missing)       # (M, T) each
        cache.complete(batch, embed(input_ids, attention_mask))          # (M, D) from the embedder
    results = batch.results()                                            # per request: outputs or error

Keys are ``(embedder_version, feature index, text)``: a new embedder never reads stale vectors. Texts
are clipped to what the tokenizer can use before keying, so a 100,000-character text costs one entry
of bounded size and embeds exactly like its tokenizer-truncated prefix (documented behaviour: long
texts are truncated to the tokenizer limit, not rejected).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from larr.contract import SCENE_VOCAB_FILE
from larr.serving.errors import RequestError
from larr.serving.lru import CacheCounters, LRUCache
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

Key = tuple[str, int, str]


@dataclass(frozen=True)
class SceneVocab:
    """Per scene feature: text -> field index of the CTR model (1-based; 0 = unseen in training)."""

    features: tuple[str, ...]
    index: tuple[dict[str, int], ...]

    @classmethod
    def load(cls, path: Path) -> "SceneVocab":
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        features = tuple(raw["fields"])
        index = tuple({str(v): i for i, v in enumerate(values, start=1)} for values in raw["values"])
        if len(index) != len(features):
            raise ValueError(f"{path}: {len(index)} value lists for {len(features)} fields")
        return cls(features, index)

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.index[k].get(t, 0) for k, t in enumerate(texts)], dtype=np.int64)  # (K,)


@dataclass
class CacheBatch:
    """The lookups of one ``execute()``: per request either its texts and vectors, or its error."""

    requests: list[list[str] | RequestError]
    vectors: list[list[np.ndarray | None] | None]
    missing: list[str] = field(default_factory=list)  # distinct embedder input texts to compute
    _missing_keys: list[Key] = field(default_factory=list)
    _missing_slots: list[list[tuple[int, int]]] = field(default_factory=list)  # (request, feature) per miss
    scene_ids: list[np.ndarray | None] = field(default_factory=list)

    def results(self) -> list[tuple[np.ndarray, np.ndarray] | RequestError]:
        """Per request: ``(SCENE_EMB (K, D) float32, SCENE_IDS (K,) int64)`` or its RequestError."""
        out: list[tuple[np.ndarray, np.ndarray] | RequestError] = []
        for parsed, vectors, ids in zip(self.requests, self.vectors, self.scene_ids):
            if isinstance(parsed, RequestError):
                out.append(parsed)
            elif any(v is None for v in vectors):
                raise RuntimeError("CacheBatch.results() before complete(): some embeddings are missing")
            else:
                out.append((np.stack(vectors).astype(np.float32, copy=False), ids))
        return out


class SceneFeatureCache:
    """Bounded LRU of per-feature scene embeddings plus the request validation in front of it."""

    def __init__(
        self,
        scene_features: Sequence[str],
        tokenizer: EmbeddingTokenizer,
        vocab: SceneVocab,
        capacity: int,
        embedder_version: str,
    ):
        if tuple(vocab.features) != tuple(scene_features):
            raise ValueError(f"scene vocab fields {vocab.features} differ from the schema {tuple(scene_features)}")
        self.scene_features = tuple(scene_features)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.embedder_version = embedder_version
        self.lru: LRUCache[np.ndarray] = LRUCache(capacity)
        # characters the tokenizer can possibly use (see larr.tokenization); longer texts are clipped
        self.max_text_chars = tokenizer.max_text_chars

    @classmethod
    def from_directory(cls, directory: Path, scene_features: Sequence[str], capacity: int, embedder_version: str):
        directory = Path(directory)
        return cls(
            scene_features,
            EmbeddingTokenizer.from_directory(directory),
            SceneVocab.load(directory / SCENE_VOCAB_FILE),
            capacity,
            embedder_version,
        )

    @property
    def counters(self) -> CacheCounters:
        return self.lru.counters

    def __len__(self) -> int:
        return len(self.lru)

    # ------------------------------------------------------------------------------------------- phases

    def parse(self, raw: np.ndarray | Sequence) -> list[str] | RequestError:
        """Validate one request's ``SCENE_TEXT`` (K,) BYTES; returns its texts or the error to send back."""
        values = np.asarray(raw, dtype=object).reshape(-1)
        expected = len(self.scene_features)
        if len(values) != expected:
            names = ", ".join(self.scene_features)
            return RequestError(f"SCENE_TEXT has {len(values)} texts; the scene schema has {expected}: {names}")
        texts = []
        for k, value in enumerate(values):
            feature = self.scene_features[k]
            if isinstance(value, (bytes, np.bytes_)):
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError as err:
                    return RequestError(f"SCENE_TEXT[{k}] ({feature}) is not valid UTF-8: {err.reason} at byte {err.start}")
            if not isinstance(value, str):
                return RequestError(f"SCENE_TEXT[{k}] ({feature}) must be a UTF-8 string, got {type(value).__name__}")
            if not value.strip():
                return RequestError(f"SCENE_TEXT[{k}] ({feature}) is empty; every scene feature needs a text")
            texts.append(value)
        return texts

    def begin(self, parsed: Sequence[list[str] | RequestError]) -> CacheBatch:
        """Look every (feature, text) up; misses are collected once across all requests."""
        batch = CacheBatch(requests=list(parsed), vectors=[])
        pending: dict[Key, int] = {}
        for r, texts in enumerate(batch.requests):
            if isinstance(texts, RequestError):
                batch.vectors.append(None)
                batch.scene_ids.append(None)
                continue
            vectors: list[np.ndarray | None] = []
            for k, text in enumerate(texts):
                key = (self.embedder_version, k, text[: self.max_text_chars])
                if key in pending:  # a miss already being computed for this batch: served by that computation
                    self.lru.counters.hits += 1
                    batch._missing_slots[pending[key]].append((r, k))
                    vectors.append(None)
                    continue
                vector = self.lru.get(key)
                if vector is None:
                    pending[key] = len(batch.missing)
                    batch.missing.append(format_scene_feature(self.scene_features[k], key[2]))
                    batch._missing_keys.append(key)
                    batch._missing_slots.append([(r, k)])
                vectors.append(vector)
            batch.vectors.append(vectors)
            batch.scene_ids.append(self.vocab.ids(texts))
        return batch

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.tokenizer(texts)  # (M, T) int64 each

    def complete(self, batch: CacheBatch, embeddings: np.ndarray) -> None:
        """Store the embedder's (M, D) rows for ``batch.missing`` and fill the waiting slots."""
        if embeddings.ndim != 2 or len(embeddings) != len(batch.missing):
            raise RuntimeError(f"embedder returned {embeddings.shape} for {len(batch.missing)} texts")
        for row, (key, slots) in enumerate(zip(batch._missing_keys, batch._missing_slots)):
            vector = np.array(embeddings[row], dtype=np.float32)  # a copy: the cache must not pin the batch
            self.lru.put(key, vector)
            for r, k in slots:
                batch.vectors[r][k] = vector
