"""Triton python-backend adapter for ``feature_cache`` (logic: larr.serving.feature_cache).

Each request is checked first, its scene texts and its ids (the ensemble's only check before the gpu
target's TensorRT ctr plan, see larr.export.repository.ensemble_config); a bad one is answered alone.

All requests of one execute() are looked up together; their misses, deduplicated, go to the embedder
in ONE BLS request (split only where they exceed the embedder's max batch size, those parts sent
concurrently). The store is the one the model config's ``scene_store`` names (larr.serving.stores.factory);
its counters are exported as Triton custom metrics (larr.serving.cache_metrics).

Requests are answered through their response senders (execute returns None): the ones every text of which
was found leave at once; ``fresh_text_policy`` (larr.serving.fresh_text) decides the rest. ``strict``
embeds the misses in a task (larr.serving.miss_embedder) and answers those requests when it is done, so
the next execute need not wait for the LLM; ``async`` answers them with the unseen-text row now and
embeds them in a background task, one BLS call per background batch; ``deadline`` embeds them as ``strict``
does but answers them by ``miss_deadline_ms`` at the latest (larr.serving.deadline).
"""

import json

import triton_python_backend_utils as pb_utils

from larr.serving.bls import embed_via_bls, scene_responses, send_responses
from larr.serving.cache_metrics import FeatureCacheMetrics
from larr.serving.deadline import MissDeadline
from larr.serving.feature_cache import FeatureCacheSettings, SceneFeatureCache
from larr.serving.fresh_text import BackgroundEmbedder, FreshTextPolicy
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.runtime import model_parameters, tensor_names
from larr.serving.stores.factory import make_store
from larr.serving.tensors import to_numpy
from larr.tokenization import EmbeddingTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.settings = settings = FeatureCacheSettings.from_model_config(config)
        (self.text_name, self.user_name, self.items_name), (self.emb_name, self.ids_name) = tensor_names(config)
        version_dir = f"{args['model_repository']}/{args['model_version']}"
        max_text_chars = EmbeddingTokenizer.from_directory(version_dir).max_text_chars
        store = make_store(model_parameters(config), version_dir, max_text_chars)
        self.cache = SceneFeatureCache.from_directory(version_dir, settings.scene_features, store, settings.embedder_version)
        # one store per instance (instances are processes): the instance label keeps their counts apart
        labels = {"model": args["model_name"], "instance": args["model_instance_name"],
                  "embedder_version": settings.embedder_version}
        self.background = BackgroundEmbedder(
            self._embed_in_background, self.cache.store, settings.embedder_max_batch, on_batch=self._report_metrics,
            busy_share=settings.background_busy_share,
        )
        self.misses = MissEmbedder(self.cache, self._embed)
        self.deadline = MissDeadline(self.misses, settings.miss_deadline_ms / 1000.0, settings.dim,
                                     on_stored=self._report_metrics)
        self.metrics = FeatureCacheMetrics(pb_utils, labels, self.cache)

    async def _embed(self, texts, model=None):
        input_ids, attention_mask = self.cache.tokenize(texts)  # (M, T) each
        return await embed_via_bls(
            pb_utils, model or self.settings.embedder_model, input_ids, attention_mask, self.settings.embedder_max_batch
        )

    async def _embed_in_background(self, texts):
        return await self._embed(texts, self.settings.background_model)

    async def execute(self, requests):
        parsed = [self._parse(r) for r in requests]
        batch = self.cache.begin(parsed)
        if batch.missing and self.settings.fresh_text_policy is FreshTextPolicy.ASYNC:
            self.cache.fall_back(batch, self.settings.dim)  # scored now with the unseen-text row
            self.background.submit(batch.missing_keys, batch.missing)  # a task on this loop; outlives the execute
        ready, waiting = batch.partition()
        self._report_metrics()  # before answering: a client that reads the metrics next sees its lookups
        self._answer(requests, batch, ready)
        if waiting:  # embedded in a task, answered when it ends (deadline: or at the deadline); the next execute can run
            finish = self.deadline if self.settings.fresh_text_policy is FreshTextPolicy.DEADLINE else self.misses
            finish.start(batch, lambda: self._finish(requests, batch, waiting))
        return None

    def _finish(self, requests, batch, waiting):
        self._report_metrics()
        self._answer(requests, batch, waiting)

    def _answer(self, requests, batch, indices):
        responses = scene_responses(pb_utils, batch.results(indices), self.emb_name, self.ids_name, self.settings.batched)
        send_responses(pb_utils, [requests[i] for i in indices], responses)

    def _parse(self, request):
        texts, user_id, item_ids = (to_numpy(pb_utils.get_input_tensor_by_name(request, name))
                                    for name in (self.text_name, self.user_name, self.items_name))
        return self.cache.parse_request(texts, user_id, item_ids, self.settings.max_candidates)

    def _report_metrics(self):
        self.metrics.report(self.cache, self.background, self.misses)

    def finalize(self):
        self.background.close()
