"""The scene-feature cache behind the ``feature_cache`` Triton model (importable and tested without Triton).

One ``execute()`` of the Triton model handles many requests, each carrying K scene texts. The cache
turns them into ``SCENE_EMB`` (K, D) and ``SCENE_IDS`` (K,) per request in three phases, so that the
adapter can send **one** embedder call for the misses of *all* requests::

    cache = SceneFeatureCache.from_directory(version_dir, features, make_store(params), embedder_version)
    batch = cache.begin([cache.parse_request(texts, user_id, item_ids, max_candidates)  # errors stay per request
                         for texts, user_id, item_ids in requests])
    if batch.missing:
        input_ids, attention_mask = cache.tokenize(batch.missing)       # (M, T) each
        cache.complete(batch, embed(input_ids, attention_mask))          # (M, D) from the embedder
    results = batch.results()                                            # per request: outputs or error

With ``fresh_text_policy`` ``async`` the misses are answered with the unseen-text row instead
(``cache.fall_back(batch, D)``) and embedded off the request path (larr.serving.fresh_text).

Where the vectors live is the injected :class:`~larr.serving.store.SceneStore` (one ``get_many`` per
execute for the batch's distinct keys, one ``put_many`` for what the embedder computed). Keys come
from :func:`~larr.serving.store.scene_key`: ``(embedder_version, feature index, clipped text)``, so a
new embedder never reads stale vectors, and a 100,000-character text costs one entry of bounded size
and embeds exactly like its tokenizer-truncated prefix (documented behaviour: long texts are
truncated to the tokenizer limit, not rejected). Validation is larr.scene_request's, shared with the
client and the benchmarks, and for the ids larr.serving.ctr_request's, shared with the ctr model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from larr.contract import SCENE_VOCAB_FILE, UNSEEN_SCENE_FILL
from larr.scene_request import SceneTextError, parse_scene_text
from larr.serving.ctr_request import validate_ctr_request
from larr.serving.errors import RequestError
from larr.serving.redis_store import RedisStats
from larr.serving.store import SceneKey, SceneStore, StoreStats, scene_key
from larr.serving.tiered_store import TieredStats
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

Parsed = list[str] | RequestError  # one request's K texts, or the error to answer it with


@dataclass(frozen=True)
class CacheMetric:
    """One exported metric, ``larr_feature_cache_{name}``: a counter (only goes up) or a gauge (a level now)."""

    name: str
    help: str
    counter: bool


# exported only where the store has a Redis tier (scene_store redis): Redis loss must show as errors and a
# degraded flag, not only as more misses, and an L2 hit (embedded by another replica) apart from L1 hits
REDIS_METRICS: tuple[CacheMetric, ...] = (
    CacheMetric("redis_hits_total", "lookups answered by Redis (L2: embedded by this or another replica)", True),
    CacheMetric("redis_errors_total", "Redis calls that failed or timed out (their lookups became misses)", True),
    CacheMetric("redis_degraded", "1 while Redis is skipped after a failure (misses go to the embedder), else 0", False),
)


def redis_tier_stats(stats: StoreStats) -> RedisStats | None:
    """The Redis tier's counters inside a store's ``stats()``, or None for a store without Redis."""
    if isinstance(stats, RedisStats):
        return stats
    if isinstance(stats, TieredStats):
        return next((tier for tier in stats.tiers if isinstance(tier, RedisStats)), None)
    return None


def redis_metric_values(stats: StoreStats) -> dict[str, float]:
    """The :data:`REDIS_METRICS` now, by name, from a store's ``stats()``; empty for a store without Redis."""
    redis = redis_tier_stats(stats)
    if redis is None:
        return {}
    return {"redis_hits_total": float(redis.hits), "redis_errors_total": float(redis.errors),
            "redis_degraded": float(redis.degraded)}


def parse_scene(raw: np.ndarray | Sequence, scene_features: Sequence[str]) -> Parsed:
    """One request's ``SCENE_TEXT`` (K,) BYTES -> its texts, or the RequestError to send back."""
    try:
        return parse_scene_text(raw, scene_features)
    except SceneTextError as error:
        return RequestError(str(error))


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
    """The lookups of one ``execute()``: per request either its keys and scene ids, or its error.

    Built by :meth:`SceneFeatureCache.begin`; ``missing`` / ``missing_keys`` are the distinct keys no
    store had, in the order the embedder must see them.
    """

    requests: list[Parsed]
    keys: list[list[SceneKey] | None]  # per request: (K,) keys; None for an error
    scene_ids: list[np.ndarray | None]  # per request: (K,) int64 field indices; None for an error
    vectors: dict[SceneKey, np.ndarray | None]  # per distinct key: (D,) float32, None until computed
    missing: list[str]  # (M,) embedder input texts (feature-tagged), one per missing key
    missing_keys: list[SceneKey]  # (M,)

    def fill(self, embeddings: np.ndarray) -> None:
        """Take the embedder's (M, D) rows for ``missing_keys``."""
        self.fill_keys(self.missing_keys, embeddings)

    def fill_keys(self, keys: Sequence[SceneKey], embeddings: np.ndarray) -> None:
        """Take the embedder's (M, D) rows for ``keys`` (some of ``missing_keys``)."""
        if embeddings.ndim != 2 or len(embeddings) != len(keys):
            raise RuntimeError(f"embedder returned {embeddings.shape} for {len(keys)} texts")
        for key, row in zip(keys, embeddings):
            self.vectors[key] = row

    def partition(self) -> tuple[list[int], list[int]]:
        """(ready, waiting): indices of the requests answerable now -- errors, and requests whose every key
        has its vector -- and of those that wait for embeddings."""
        ready: list[int] = []
        waiting: list[int] = []
        for index, keys in enumerate(self.keys):
            done = keys is None or all(self.vectors[key] is not None for key in keys)
            (ready if done else waiting).append(index)
        return ready, waiting

    def fill_unseen(self, dim: int) -> int:
        """Answer every missing key with the unseen-text row, zeros (D,) (fresh_text_policy ``async``).
        Returns the lookups (one per request and feature) that got it."""
        row = np.full(dim, UNSEEN_SCENE_FILL, dtype=np.float32)  # (D,), shared: results() stacks copies
        for key in self.missing_keys:
            self.vectors[key] = row
        missing = set(self.missing_keys)
        return sum(key in missing for keys in self.keys if keys is not None for key in keys)

    def fail(self, error: RequestError) -> None:
        """Every request still valid fails with ``error`` (the embedder call they all waited on failed)."""
        self.requests = [p if isinstance(p, RequestError) else error for p in self.requests]

    def results(self, indices: Sequence[int] | None = None) -> list[tuple[np.ndarray, np.ndarray] | RequestError]:
        """Per request (all, or those at ``indices``): ``(SCENE_EMB (K, D) float32, SCENE_IDS (K,) int64)`` or
        its RequestError."""
        chosen = range(len(self.requests)) if indices is None else indices
        out: list[tuple[np.ndarray, np.ndarray] | RequestError] = []
        for index in chosen:
            parsed, keys, ids = self.requests[index], self.keys[index], self.scene_ids[index]
            if isinstance(parsed, RequestError):
                out.append(parsed)
                continue
            vectors = [self.vectors[key] for key in keys]
            if any(v is None for v in vectors):
                raise RuntimeError("CacheBatch.results() before complete(): some embeddings are missing")
            out.append((np.stack(vectors).astype(np.float32, copy=False), ids))  # (K, D)
        return out


class SceneFeatureCache:
    """Request validation, keys and tokenisation in front of a :class:`SceneStore` of scene embeddings."""

    def __init__(
        self,
        scene_features: Sequence[str],
        tokenizer: EmbeddingTokenizer,
        vocab: SceneVocab,
        store: SceneStore,
        embedder_version: str,
    ):
        if tuple(vocab.features) != tuple(scene_features):
            raise ValueError(f"scene vocab fields {vocab.features} differ from the schema {tuple(scene_features)}")
        self.scene_features = tuple(scene_features)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.store = store
        self.embedder_version = embedder_version
        # characters the tokenizer can possibly use (see larr.tokenization); longer texts are clipped
        self.max_text_chars = tokenizer.max_text_chars
        # lookups served by another lookup of the same key in the same execute (the store saw the key once)
        self.coalesced = 0
        # lookups answered with the unseen-text row instead of an embedding (fresh_text_policy async)
        self.fresh_fallbacks = 0

    @classmethod
    def from_directory(
        cls, directory: Path, scene_features: Sequence[str], store: SceneStore, embedder_version: str
    ) -> SceneFeatureCache:
        directory = Path(directory)
        return cls(
            scene_features,
            EmbeddingTokenizer.from_directory(directory),
            SceneVocab.load(directory / SCENE_VOCAB_FILE),
            store,
            embedder_version,
        )

    def stats(self) -> StoreStats:
        """The store's counters: one lookup per distinct key of an execute. Repeats of a key within one
        execute are counted apart, in :attr:`coalesced` -- they are neither store hits (a cache of capacity
        0 still serves them) nor misses (the embedder computes the key once)."""
        return self.store.stats()

    # ------------------------------------------------------------------------------------------- phases

    def parse(self, raw: np.ndarray | Sequence) -> Parsed:
        """Validate one request's ``SCENE_TEXT`` (K,) BYTES; returns its texts or the error to send back."""
        return parse_scene(raw, self.scene_features)

    def parse_request(self, raw: np.ndarray | Sequence, user_id: np.ndarray, item_ids: np.ndarray, max_candidates: int) -> Parsed:
        """Validate one ensemble request: its ``SCENE_TEXT`` (K,), then its ``USER_ID`` (1,) and ``ITEM_IDS`` (N,)
        with the ctr model's own check (larr.serving.ctr_request). Refused here, a request costs no embedding,
        and no ctr step scores it -- not even the gpu target's TensorRT plan, which has no checks."""
        parsed = self.parse(raw)
        if isinstance(parsed, RequestError):
            return parsed
        try:
            validate_ctr_request(user_id, item_ids, max_candidates)
        except RequestError as error:
            return error
        return parsed

    def begin(self, parsed: Sequence[Parsed]) -> CacheBatch:
        """Look the distinct keys of all requests up in one ``get_many``; misses are collected once."""
        requests = list(parsed)
        keys: list[list[SceneKey] | None] = []
        scene_ids: list[np.ndarray | None] = []
        distinct: dict[SceneKey, None] = {}  # first-seen order: the order of the lookups and of the embedder rows
        lookups = 0
        for texts in requests:
            if isinstance(texts, RequestError):
                keys.append(None)
                scene_ids.append(None)
                continue
            request_keys = [scene_key(self.embedder_version, k, text, self.max_text_chars) for k, text in enumerate(texts)]
            distinct.update(dict.fromkeys(request_keys))
            lookups += len(request_keys)
            keys.append(request_keys)
            scene_ids.append(self.vocab.ids(texts))  # (K,)
        vectors = dict(zip(distinct, self.store.get_many(list(distinct))))
        self.coalesced += lookups - len(distinct)
        missing_keys = [key for key, vector in vectors.items() if vector is None]
        return CacheBatch(
            requests=requests,
            keys=keys,
            scene_ids=scene_ids,
            vectors=vectors,
            missing=[format_scene_feature(self.scene_features[key.feature], key.text) for key in missing_keys],
            missing_keys=missing_keys,
        )

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.tokenizer(texts)  # (M, T) int64 each

    def fall_back(self, batch: CacheBatch, dim: int) -> None:
        """fresh_text_policy ``async``: answer ``batch.missing`` with the unseen-text row (D,) now; nothing is
        written to the store (the background embedder writes the real vectors, larr.serving.fresh_text)."""
        self.fresh_fallbacks += batch.fill_unseen(dim)

    def complete(self, batch: CacheBatch, embeddings: np.ndarray) -> None:
        """Write the embedder's (M, D) rows for ``batch.missing`` through to the store and into the batch."""
        self.complete_keys(batch, batch.missing_keys, embeddings)

    def complete_keys(self, batch: CacheBatch, keys: Sequence[SceneKey], embeddings: np.ndarray) -> None:
        """The same for some of the missing keys (the others being embedded by another batch's call)."""
        batch.fill_keys(keys, embeddings)  # checks the shape before the store sees anything
        self.store.put_many(list(keys), embeddings)
