"""Triton python-backend adapter for ``feature_cache`` (logic: larr.serving.feature_cache).

All requests of one execute() are looked up together; their misses, deduplicated, go to the embedder
in ONE BLS request (split only where they exceed the embedder's max batch size, those parts sent
concurrently). The store is the one the model config's ``scene_store`` names (larr.serving.stores);
its counters (``StoreStats``) are exported as Triton custom metrics.

``fresh_text_policy`` (larr.serving.fresh_text): ``strict`` embeds the misses before answering; ``async``
answers them with the unseen-text row and embeds them in a background task on the stub's event loop
(which keeps running between executes), one BLS call per background batch.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.contract import (
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_FRESH_TEXT_POLICY,
    PARAM_SCENE_FEATURES,
)
from larr.serving.bls import embed_via_bls, scene_responses
from larr.serving.errors import RequestError
from larr.serving.feature_cache import REDIS_METRICS, SceneFeatureCache, redis_metric_values, redis_tier_stats
from larr.serving.fresh_text import BackgroundEmbedder, FreshTextPolicy
from larr.serving.runtime import model_parameters, tensor_names
from larr.serving.stores import make_store, tier_names, tier_stats
from larr.serving.tensors import to_numpy
from larr.tokenization import EmbeddingTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        (self.text_name,), (self.emb_name, self.ids_name) = tensor_names(config)
        self.batched = config["max_batch_size"] > 0  # outputs get the request's batch axis
        self.embedder_model = params[PARAM_EMBEDDER_MODEL]
        self.embedder_max_batch = int(params[PARAM_EMBEDDER_MAX_BATCH])
        # repositories exported before the parameter existed embed every miss, as they always did
        self.policy = FreshTextPolicy.parse(params.get(PARAM_FRESH_TEXT_POLICY, FreshTextPolicy.STRICT))
        # SCENE_EMB [.., K, D]: the unseen row's D (protobuf JSON may write int64 dims as strings)
        self.dim = int(next(o for o in config["output"] if o["name"] == self.emb_name)["dims"][-1])
        version = params[PARAM_EMBEDDER_VERSION]
        version_dir = f"{args['model_repository']}/{args['model_version']}"
        self.cache = SceneFeatureCache.from_directory(
            version_dir,
            json.loads(params[PARAM_SCENE_FEATURES]),
            make_store(params, version_dir, EmbeddingTokenizer.from_directory(version_dir).max_text_chars),
            version,
        )
        # the families must outlive their metrics, or increment() fails
        # one store per instance (instances are processes): the instance label keeps their counts apart
        labels = {"model": args["model_name"], "instance": args["model_instance_name"], "embedder_version": version}
        self.families = {
            name: pb_utils.MetricFamily(name=f"larr_feature_cache_{name}", description=text, kind=kind)
            for name, text, kind in (
                ("hits_total", "scene-feature lookups served from the cache", pb_utils.MetricFamily.COUNTER),
                ("misses_total", "scene-feature lookups that needed the embedder", pb_utils.MetricFamily.COUNTER),
                ("coalesced_total", "lookups served by another lookup of the same text in the same batch",
                 pb_utils.MetricFamily.COUNTER),
                ("evictions_total", "entries evicted to keep the cache within its bound", pb_utils.MetricFamily.COUNTER),
                ("fresh_fallbacks_total", "lookups answered with the unseen-text row (fresh_text_policy async)",
                 pb_utils.MetricFamily.COUNTER),
                ("background_embedded_total", "scene texts embedded in the background and stored",
                 pb_utils.MetricFamily.COUNTER),
                ("background_failed_total", "scene texts whose background embedding failed",
                 pb_utils.MetricFamily.COUNTER),
                ("entries", "entries in the cache now", pb_utils.MetricFamily.GAUGE),
                ("bytes", "bytes of the cached texts and vectors now", pb_utils.MetricFamily.GAUGE),
            )
        }
        # Redis health, only where the store has a Redis tier: its loss shows as errors and a degraded flag
        if redis_tier_stats(self.cache.stats()) is not None:
            self.families.update({
                m.name: pb_utils.MetricFamily(
                    name=f"larr_feature_cache_{m.name}", description=m.help,
                    kind=pb_utils.MetricFamily.COUNTER if m.counter else pb_utils.MetricFamily.GAUGE,
                )
                for m in REDIS_METRICS
            })
        self.metrics = {name: family.Metric(labels=labels) for name, family in self.families.items()}
        self.redis_reported = dict.fromkeys((m.name for m in REDIS_METRICS if m.counter), 0.0)
        # entries and bytes per tier (table, lru, redis): only the LRU's are bounded by cache_capacity/cache_max_bytes
        self.tier_families = {
            name: pb_utils.MetricFamily(name=f"larr_feature_cache_tier_{name}", description=text,
                                        kind=pb_utils.MetricFamily.GAUGE)
            for name, text in (("entries", "entries held by one store tier now"),
                               ("bytes", "bytes of texts and vectors held by one store tier now"))
        }
        self.tier_metrics = [
            {name: family.Metric(labels={**labels, "tier": tier}) for name, family in self.tier_families.items()}
            for tier in tier_names(self.cache.store)
        ]
        self.counters = ("hits_total", "misses_total", "evictions_total", "coalesced_total", "fresh_fallbacks_total",
                         "background_embedded_total", "background_failed_total")
        self.reported = (0,) * len(self.counters)
        self.background = BackgroundEmbedder(
            self._embed, self.cache.store, self.embedder_max_batch, on_batch=self._report_metrics
        )

    async def _embed(self, texts):
        input_ids, attention_mask = self.cache.tokenize(texts)  # (M, T) each
        return await embed_via_bls(pb_utils, self.embedder_model, input_ids, attention_mask, self.embedder_max_batch)

    async def execute(self, requests):
        parsed = [self.cache.parse(to_numpy(pb_utils.get_input_tensor_by_name(r, self.text_name))) for r in requests]
        batch = self.cache.begin(parsed)
        if batch.missing and self.policy is FreshTextPolicy.ASYNC:
            self.cache.fall_back(batch, self.dim)  # scored now with the unseen-text row
            self.background.submit(batch.missing_keys, batch.missing)  # a task on this loop; outlives the execute
        elif batch.missing:
            input_ids, attention_mask = self.cache.tokenize(batch.missing)  # (M, T) each
            try:
                embeddings = await embed_via_bls(
                    pb_utils, self.embedder_model, input_ids, attention_mask, self.embedder_max_batch
                )  # (M, D)
                self.cache.complete(batch, embeddings)
            except RequestError as error:  # the embedder failed: every request that needed it fails
                batch.fail(error)
        self._report_metrics()
        return scene_responses(pb_utils, batch.results(), self.emb_name, self.ids_name, self.batched)

    def _report_metrics(self):
        stats = self.cache.stats()  # the store's counters (all tiers together)
        background = self.background
        now = (stats.hits, stats.misses, stats.evictions, self.cache.coalesced, self.cache.fresh_fallbacks,
               background.embedded, background.failed)
        for name, new, old in zip(self.counters, now, self.reported):
            if new > old:  # Prometheus counters only go up: send the increase since the last report
                self.metrics[name].increment(new - old)
        self.metrics["entries"].set(stats.entries)
        self.metrics["bytes"].set(stats.bytes)
        for metrics, tier in zip(self.tier_metrics, tier_stats(self.cache.store, stats)):
            metrics["entries"].set(tier.entries)
            metrics["bytes"].set(tier.bytes)
        self.reported = now
        for name, value in redis_metric_values(stats).items():
            if name not in self.redis_reported:  # a gauge
                self.metrics[name].set(value)
            elif value > self.redis_reported[name]:
                self.metrics[name].increment(value - self.redis_reported[name])
                self.redis_reported[name] = value

    def finalize(self):
        self.background.close()
