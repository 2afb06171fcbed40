"""Benchmark requests drawn from the dataset: Zipf-distributed scene texts with a share of never-seen ones.

    pools = ScenePools.from_dataset(load_dataset("runs/demo/data", splits=("train",)))
    stream = RequestStream(pools, WorkloadSpec(unseen_share=0.1, candidates=100))
    warmup, first = stream.take(32), stream.take(500)        # request i is the same in every variant
    write_perf_analyzer_data(first, "level1.json")           # perf_analyzer --input-data level1.json

Per request and scene feature k, a *seen* text is drawn from feature k's training texts, ranked by
frequency, with ``P(rank r) ~ r^-s`` (``zipf_exponent`` s); with probability ``unseen_share`` it is
replaced by a fresh text, one never sent before in the stream (a seen text plus a unique suffix, so
its length is realistic). The unseen coin flips come from their own random generator, so streams
with different shares draw the same seen texts, users and items and differ only in which texts are
fresh. The user is uniform over the dataset's users, the N candidates a uniform sample of its items.

:func:`simulate_cache` replays a stream through the serving feature cache itself
(``larr.serving.feature_cache.SceneFeatureCache``, with a stand-in embedder) to count what the
server must embed: the tokens per request of the cache misses, against the tokens per request of the
whole-scene text the full-text baseline embeds. Their ratio is the bound the token counts set on
LARR's speed-up over the full-text baseline.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from larr.contract import ITEM_IDS, SCENE_TEXT, USER_ID
from larr.serving.feature_cache import SceneFeatureCache, SceneVocab
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneStore
from larr.text import format_scene, format_scene_feature
from larr.tokenization import EmbeddingTokenizer

_CHUNK = 256  # requests drawn per batch of random numbers


@dataclass(frozen=True)
class WorkloadSpec:
    """How one request stream is drawn."""

    unseen_share: float = 0.1  # probability that a scene text is a fresh, never-seen one
    candidates: int = 100  # N candidate items per request
    zipf_exponent: float = 1.1  # s in P(rank r) ~ r^-s
    seed: int = 2024

    def __post_init__(self) -> None:
        if not 0.0 <= self.unseen_share <= 1.0:
            raise ValueError(f"unseen_share must be in [0, 1], got {self.unseen_share}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        if not self.zipf_exponent > 0:
            raise ValueError(f"zipf_exponent must be > 0, got {self.zipf_exponent}")


@dataclass(frozen=True)
class ScenePools:
    """Per scene feature, the seen texts by descending training frequency, and the id ranges."""

    features: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]
    num_users: int
    num_items: int

    def __post_init__(self) -> None:
        if len(self.values) != len(self.features):
            raise ValueError(f"{len(self.values)} value pools for {len(self.features)} scene features")
        empty = [f for f, pool in zip(self.features, self.values) if not pool]
        if empty:
            raise ValueError(f"scene features without any seen text: {empty}")
        if self.num_users < 1 or self.num_items < 1:
            raise ValueError(f"need at least one user and one item, got {self.num_users} and {self.num_items}")

    @classmethod
    def from_columns(
        cls, features: Sequence[str], columns: Sequence[Sequence[str]], num_users: int, num_items: int
    ) -> "ScenePools":
        """``columns[k]`` holds feature k's text of every training row; ties keep first-seen order."""
        ranked = tuple(tuple(text for text, _ in Counter(column).most_common()) for column in columns)
        return cls(tuple(features), ranked, num_users, num_items)

    @classmethod
    def from_dataset(cls, dataset) -> "ScenePools":
        """From a :class:`larr.data.schema.Dataset` with its train split loaded."""
        info = dataset.info
        return cls.from_columns(info.scene_features, dataset.train.scene, info.num_users, info.num_items)


@dataclass(frozen=True)
class BenchRequest:
    """One request of the public contract (``SCENE_TEXT`` [K], ``USER_ID`` [1], ``ITEM_IDS`` [N])."""

    scene: tuple[str, ...]  # K texts in the published feature order
    user_id: int
    item_ids: tuple[int, ...]
    unseen: int = 0  # how many of the K texts are fresh

    def to_json(self) -> dict:
        """The request as a JSON body (FastAPI service)."""
        return {"scene_text": list(self.scene), "user_id": self.user_id, "item_ids": list(self.item_ids)}


def zipf_probabilities(size: int, exponent: float) -> np.ndarray:
    """(size,) probabilities of ranks 1..size, proportional to rank^-exponent."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    weights = np.arange(1, size + 1, dtype=np.float64) ** -float(exponent)
    return weights / weights.sum()


class RequestStream:
    """A deterministic, endless stream of requests; :meth:`take` returns the next ones.

    Two streams with the same pools and spec yield the same requests in the same order, so every
    variant sees request i identically. Fresh texts are unique within a stream.
    """

    def __init__(self, pools: ScenePools, spec: WorkloadSpec):
        if spec.candidates > pools.num_items:
            raise ValueError(f"{spec.candidates} candidates requested, the dataset has {pools.num_items} items")
        self.pools = pools
        self.spec = spec
        self._cdfs = [np.cumsum(zipf_probabilities(len(pool), spec.zipf_exponent)) for pool in pools.values]
        self._draws = np.random.default_rng([spec.seed, 0])  # texts, users, items: shared by every share
        self._coins = np.random.default_rng([spec.seed, 1])  # unseen flips: same sequence for every share
        self._fresh = 0
        self._buffer: list[BenchRequest] = []
        self.taken = 0

    def take(self, count: int) -> list[BenchRequest]:
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        while len(self._buffer) < count:
            self._buffer.extend(self._draw_chunk(_CHUNK))
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        self.taken += count
        return out

    def _draw_chunk(self, size: int) -> list[BenchRequest]:
        k = len(self.pools.features)
        uniforms = self._draws.random((size, k))  # (B, K) -> Zipf ranks by inverse CDF
        ranks = np.stack(
            [np.searchsorted(cdf, uniforms[:, j], side="right") for j, cdf in enumerate(self._cdfs)], axis=1
        )  # (B, K)
        users = self._draws.integers(0, self.pools.num_users, size)  # (B,)
        # A random permutation's first N entries: N distinct items per request.
        items = np.argsort(self._draws.random((size, self.pools.num_items)), axis=1)[:, : self.spec.candidates]
        unseen = self._coins.random((size, k)) < self.spec.unseen_share  # (B, K)
        requests = []
        for b in range(size):
            scene = []
            for j in range(k):
                pool = self.pools.values[j]
                text = pool[min(int(ranks[b, j]), len(pool) - 1)]
                if unseen[b, j]:
                    text = self._fresh_text(text)
                scene.append(text)
            item_ids = tuple(int(i) for i in items[b])
            requests.append(BenchRequest(tuple(scene), int(users[b]), item_ids, int(unseen[b].sum())))
        return requests

    def _fresh_text(self, base: str) -> str:
        """A text never sent before in this stream: a seen one with a unique suffix."""
        self._fresh += 1
        return f"{base} #{self._fresh:x}"


# --------------------------------------------------------------------------------------------- perf_analyzer data


def perf_analyzer_data(requests: Sequence[BenchRequest]) -> dict:
    """``--input-data`` JSON: variable-shape inputs need ``content`` + ``shape`` (docs/serving-toolchain.md)."""
    if not requests:
        raise ValueError("perf_analyzer needs at least one request in its input data")
    return {
        "data": [
            {
                SCENE_TEXT: {"content": list(r.scene), "shape": [len(r.scene)]},
                USER_ID: [r.user_id],
                ITEM_IDS: {"content": list(r.item_ids), "shape": [len(r.item_ids)]},
            }
            for r in requests
        ]
    }


def write_perf_analyzer_data(requests: Sequence[BenchRequest], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(perf_analyzer_data(requests), ensure_ascii=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- token counts


@dataclass(frozen=True)
class CacheSimulation:
    """What the server embeds for a segment of requests, replayed through the feature cache."""

    requests: int
    hits: int
    misses: int
    miss_tokens: int  # tokens of the missed per-feature texts, <emb> included
    fulltext_tokens: int  # tokens of the whole-scene texts of the same requests, <emb> included
    cache_off_tokens: int  # tokens of every per-feature text (the cache-off variant)

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def miss_tokens_per_request(self) -> float:
        return self.miss_tokens / self.requests if self.requests else 0.0

    @property
    def fulltext_tokens_per_request(self) -> float:
        return self.fulltext_tokens / self.requests if self.requests else 0.0

    @property
    def cache_off_tokens_per_request(self) -> float:
        return self.cache_off_tokens / self.requests if self.requests else 0.0

    def token_bound(self, reference_tokens: int | None = None) -> float | None:
        """reference tokens (default: full-text) per request / cache-miss tokens per request; None when
        nothing missed (the bound is unbounded: LARR embedded nothing)."""
        reference = self.fulltext_tokens if reference_tokens is None else reference_tokens
        return token_bound(reference, self.miss_tokens)

    def to_json(self) -> dict:
        return {
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "miss_tokens_per_request": self.miss_tokens_per_request,
            "fulltext_tokens_per_request": self.fulltext_tokens_per_request,
            "cache_off_tokens_per_request": self.cache_off_tokens_per_request,
        }


def token_bound(reference_tokens: float, miss_tokens: float) -> float | None:
    """``reference_tokens / miss_tokens`` (same number of requests on both sides); None if nothing missed."""
    if reference_tokens < 0 or miss_tokens < 0:
        raise ValueError("token counts must be >= 0")
    return reference_tokens / miss_tokens if miss_tokens > 0 else None


class CacheSimulator:
    """Replays requests, one per execute(), through a :class:`SceneFeatureCache` over ``store``.

    Keys, text clipping and the per-execute de-duplication are the server's own code; only the
    embedder is replaced (by zeros), so the counts are what the server embeds when requests arrive in
    this order. ``store`` defaults to an LRU of ``capacity``; pass the served store (``make_store`` of the
    exported feature_cache config, scene table included) and its ``embedder_version`` to replay what
    a server with that store holds from its start.
    """

    def __init__(
        self,
        features: Sequence[str],
        tokenizer: EmbeddingTokenizer,
        fulltext_tokenizer: EmbeddingTokenizer,
        capacity: int = 0,
        store: SceneStore | None = None,
        embedder_version: str = "simulation",
    ):
        self.features = tuple(features)
        empty_vocab = SceneVocab(self.features, tuple({} for _ in self.features))
        store = store if store is not None else LRUStore(capacity)
        self.cache = SceneFeatureCache(self.features, tokenizer, empty_vocab, store, embedder_version=embedder_version)
        self.tokenizer = tokenizer
        self.fulltext_tokenizer = fulltext_tokenizer

    def _dim(self, batch) -> int:
        """Row size of the zeros written back: the store's own (a table's D) where it has rows, else 1."""
        known = next((v for v in batch.vectors.values() if v is not None), None)
        return 1 if known is None else int(np.asarray(known).shape[-1])

    def run(self, requests: Sequence[BenchRequest]) -> CacheSimulation:
        before = self.cache.stats()
        miss_tokens = 0
        for request in requests:
            batch = self.cache.begin([self.cache.parse(list(request.scene))])
            if batch.missing:
                miss_tokens += sum(len(ids) for ids in self.tokenizer.token_ids(batch.missing))
                self.cache.complete(batch, np.zeros((len(batch.missing), self._dim(batch)), dtype=np.float32))
        scenes = [format_scene(self.features, r.scene) for r in requests]
        clip = self.cache.max_text_chars
        feature_texts = [format_scene_feature(f, t[:clip]) for r in requests for f, t in zip(self.features, r.scene)]
        after = self.cache.stats()
        return CacheSimulation(
            requests=len(requests),
            hits=after.hits - before.hits,
            misses=after.misses - before.misses,
            miss_tokens=miss_tokens,
            fulltext_tokens=sum(len(ids) for ids in self.fulltext_tokenizer.token_ids(scenes)) if scenes else 0,
            cache_off_tokens=sum(len(ids) for ids in self.tokenizer.token_ids(feature_texts)) if feature_texts else 0,
        )


def simulate_cache(
    segments: Sequence[Sequence[BenchRequest]],
    features: Sequence[str],
    tokenizer: EmbeddingTokenizer,
    fulltext_tokenizer: EmbeddingTokenizer,
    capacity: int,
) -> list[CacheSimulation]:
    """One :class:`CacheSimulation` per segment, replayed in order through one cache (warm-up first)."""
    simulator = CacheSimulator(features, tokenizer, fulltext_tokenizer, capacity)
    return [simulator.run(segment) for segment in segments]
