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
(``cache.fall_back(batch, D)``) and embedded off the request path (larr.serving.fresh_text); with ``deadline``
they are embedded as under ``strict``, and those still missing at the deadline get the unseen-text row
(``cache.fall_back_late(batch, D)``, larr.serving.deadline).

Where the vectors live is the injected :class:`~larr.serving.stores.protocol.SceneStore` (one ``get_many`` per
execute for the batch's distinct keys, one ``put_many`` for what the embedder computed). Keys come
from :func:`~larr.serving.stores.protocol.scene_key`: ``(embedder_version, feature index, clipped text)``, so a
new embedder never reads stale vectors, and a 100,000-character text costs one entry of bounded size
and embeds exactly like its tokenizer-truncated prefix (documented behaviour: long texts are
truncated to the tokenizer limit, not rejected). Validation is larr.scene_request's, shared with the
client and the benchmarks, and for the ids larr.serving.ctr_request's, shared with the ctr model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from larr.contract import (
    PARAM_BACKGROUND_BUSY_SHARE,
    PARAM_BACKGROUND_EMBEDDER_MODEL,
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_FRESH_TEXT_POLICY,
    PARAM_MAX_CANDIDATES,
    PARAM_MISS_DEADLINE_MS,
    PARAM_SCENE_FEATURES,
    SCENE_VOCAB_FILE,
    UNSEEN_SCENE_FILL,
)
from larr.scene_request import SceneTextError, parse_scene_text
from larr.serving.ctr_request import validate_ctr_request
from larr.serving.errors import RequestError
from larr.serving.fresh_text import DEFAULT_BUSY_SHARE, DEFAULT_MISS_DEADLINE_MS, FreshTextPolicy
from larr.serving.model_config import model_parameters
from larr.serving.stores.protocol import SceneKey, SceneStore, StoreStats, scene_key
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

Parsed = list[str] | RequestError  # one request's K texts, or the error to answer it with


@dataclass(frozen=True)
class FeatureCacheSettings:
    """What the ``feature_cache`` model config sets for the cache and its adapter, read and checked once.

    The store's own parameters (``scene_store``, ``cache_*``, ``redis_*``) are the store factory's
    (larr.serving.stores.factory). Every bad value raises ``ValueError`` naming its parameter::

        settings = FeatureCacheSettings.from_model_config(json.loads(args["model_config"]))
    """

    scene_features: tuple[str, ...]  # (K,) names, in the published order
    embedder_version: str  # part of every store key: a new embedder never reads another's vectors
    max_candidates: int  # the ids are checked here too (SceneFeatureCache.parse_request)
    embedder_model: str  # the model the misses' BLS calls go to
    embedder_max_batch: int  # texts per BLS request (the embedder's max_batch_size)
    dim: int  # D of SCENE_EMB (K, D): the width of the unseen-text row
    batched: bool  # max_batch_size > 0: the outputs get the request's batch axis
    # repositories exported before fresh_text_policy existed embed every miss, as they always did
    fresh_text_policy: FreshTextPolicy = FreshTextPolicy.STRICT
    background_model: str = ""  # async: a model at idle OS priority, when the export made one ("": embedder_model)
    background_busy_share: float = DEFAULT_BUSY_SHARE
    miss_deadline_ms: float = DEFAULT_MISS_DEADLINE_MS  # deadline: how long a request waits for its misses

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene_features", tuple(self.scene_features))
        object.__setattr__(self, "fresh_text_policy", FreshTextPolicy.parse(self.fresh_text_policy))
        if not self.background_model:
            object.__setattr__(self, "background_model", self.embedder_model)
        if not self.scene_features or not all(isinstance(f, str) and f for f in self.scene_features):
            raise ValueError(f"{PARAM_SCENE_FEATURES} must name at least one feature, got {list(self.scene_features)}")
        for name, value in ((PARAM_EMBEDDER_VERSION, self.embedder_version), (PARAM_EMBEDDER_MODEL, self.embedder_model)):
            if not value:
                raise ValueError(f"{name} must not be empty")
        for name, value in ((PARAM_MAX_CANDIDATES, self.max_candidates), (PARAM_EMBEDDER_MAX_BATCH, self.embedder_max_batch),
                            ("the SCENE_EMB output's last dim", self.dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 < self.background_busy_share <= 1.0:
            raise ValueError(f"{PARAM_BACKGROUND_BUSY_SHARE} must be in (0, 1], got {self.background_busy_share}")
        if not 0.0 <= self.miss_deadline_ms < float("inf"):  # also refuses NaN
            raise ValueError(f"{PARAM_MISS_DEADLINE_MS} must be a finite number >= 0, got {self.miss_deadline_ms}")

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> FeatureCacheSettings:
        """The config's parameters (string values, as Triton hands them over), its first output's last dim
        (SCENE_EMB) and its ``max_batch_size``; absent optional parameters take the defaults."""
        params = model_parameters(config)
        # protobuf JSON may write int64 dims as strings
        dim = _number(int, "the SCENE_EMB output's last dim", config["output"][0]["dims"][-1])
        return cls(
            scene_features=_scene_features(_required(params, PARAM_SCENE_FEATURES)),
            embedder_version=_required(params, PARAM_EMBEDDER_VERSION),
            max_candidates=_number(int, PARAM_MAX_CANDIDATES, _required(params, PARAM_MAX_CANDIDATES)),
            embedder_model=_required(params, PARAM_EMBEDDER_MODEL),
            embedder_max_batch=_number(int, PARAM_EMBEDDER_MAX_BATCH, _required(params, PARAM_EMBEDDER_MAX_BATCH)),
            dim=dim,
            batched=int(config.get("max_batch_size", 0)) > 0,
            fresh_text_policy=params.get(PARAM_FRESH_TEXT_POLICY, FreshTextPolicy.STRICT),
            background_model=params.get(PARAM_BACKGROUND_EMBEDDER_MODEL, ""),
            background_busy_share=_number(float, PARAM_BACKGROUND_BUSY_SHARE,
                                          params.get(PARAM_BACKGROUND_BUSY_SHARE, DEFAULT_BUSY_SHARE)),
            miss_deadline_ms=_number(float, PARAM_MISS_DEADLINE_MS, params.get(PARAM_MISS_DEADLINE_MS, DEFAULT_MISS_DEADLINE_MS)),
        )


def _required(params: Mapping[str, str], name: str) -> str:
    if name not in params:
        raise ValueError(f"the feature_cache model config has no parameter {name!r} (re-export the repository)")
    return params[name]


def _number(kind: type, name: str, value: Any) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def _scene_features(raw: str) -> tuple[str, ...]:
    try:
        features = json.loads(raw)
    except json.JSONDecodeError:
        features = None
    if not isinstance(features, list):
        raise ValueError(f"{PARAM_SCENE_FEATURES} must be a JSON list of feature names, got {raw!r}")
    return tuple(features)


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

    def fill_unseen_pending(self, dim: int) -> int:
        """Answer the missing keys that have no vector yet with the unseen-text row, zeros (D,) (fresh_text_policy
        ``deadline``, at the deadline: rows the embedder already gave are kept). Returns how many keys got it, one
        per distinct key as the store's ``misses`` counts them."""
        row = np.full(dim, UNSEEN_SCENE_FILL, dtype=np.float32)  # (D,), shared: results() stacks copies
        pending = [key for key in self.missing_keys if self.vectors[key] is None]
        for key in pending:
            self.vectors[key] = row
        return len(pending)

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
        # missing texts (one per batch, like the store's misses) whose embedding missed the deadline (deadline)
        self.deadline_fallbacks = 0

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

    def fall_back_late(self, batch: CacheBatch, dim: int) -> None:
        """fresh_text_policy ``deadline``, at the deadline: the misses the embedder has not answered yet get the
        unseen-text row (D,); the embedder call goes on and writes the real vectors through when it returns."""
        self.deadline_fallbacks += batch.fill_unseen_pending(dim)

    def complete(self, batch: CacheBatch, embeddings: np.ndarray) -> None:
        """Write the embedder's (M, D) rows for ``batch.missing`` through to the store and into the batch."""
        self.complete_keys(batch, batch.missing_keys, embeddings)

    def complete_keys(self, batch: CacheBatch, keys: Sequence[SceneKey], embeddings: np.ndarray) -> None:
        """The same for some of the missing keys (the others being embedded by another batch's call)."""
        batch.fill_keys(keys, embeddings)  # checks the shape before the store sees anything
        self.store.put_many(list(keys), embeddings)
