"""Triton python-backend adapter for ``feature_cache`` (logic: larr.serving.feature_cache).

Each request is checked first, its scene texts and its ids (the ensemble's only check before the gpu
target's TensorRT ctr plan, see larr.export.repository.ensemble_config); a bad one is answered alone.

All requests of one execute() are looked up together; their misses, deduplicated, go to the embedder
in ONE BLS request (split only where they exceed the embedder's max batch size, those parts sent
concurrently). The store is the one the model config's ``scene_store`` names (larr.serving.stores);
its counters are exported as Triton custom metrics (larr.serving.cache_metrics).

Requests are answered through their response senders (execute returns None): the ones every text of which
was found leave at once; ``fresh_text_policy`` (larr.serving.fresh_text) decides the rest. ``strict``
embeds the misses in a task (larr.serving.miss_embedder) and answers those requests when it is done, so
the next execute need not wait for the LLM; ``async`` answers them with the unseen-text row now and
embeds them in a background task, one BLS call per background batch.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.contract import (
    PARAM_BACKGROUND_BUSY_SHARE,
    PARAM_BACKGROUND_EMBEDDER_MODEL,
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_FRESH_TEXT_POLICY,
    PARAM_MAX_CANDIDATES,
    PARAM_SCENE_FEATURES,
)
from larr.serving.bls import embed_via_bls, scene_responses, send_responses
from larr.serving.cache_metrics import FeatureCacheMetrics
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.fresh_text import DEFAULT_BUSY_SHARE, BackgroundEmbedder, FreshTextPolicy
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.runtime import model_parameters, tensor_names
from larr.serving.stores import make_store
from larr.serving.tensors import to_numpy
from larr.tokenization import EmbeddingTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        (self.text_name, self.user_name, self.items_name), (self.emb_name, self.ids_name) = tensor_names(config)
        self.max_candidates = int(params[PARAM_MAX_CANDIDATES])  # the ids are checked here too (SceneFeatureCache.parse_request)
        self.batched = config["max_batch_size"] > 0  # outputs get the request's batch axis
        self.embedder_model = params[PARAM_EMBEDDER_MODEL]
        # async: fresh texts are embedded by a model at idle OS priority, when the export made one
        self.background_model = params.get(PARAM_BACKGROUND_EMBEDDER_MODEL, self.embedder_model)
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
        # one store per instance (instances are processes): the instance label keeps their counts apart
        labels = {"model": args["model_name"], "instance": args["model_instance_name"], "embedder_version": version}
        self.background = BackgroundEmbedder(
            self._embed_in_background, self.cache.store, self.embedder_max_batch, on_batch=self._report_metrics,
            busy_share=float(params.get(PARAM_BACKGROUND_BUSY_SHARE, DEFAULT_BUSY_SHARE)),
        )
        self.misses = MissEmbedder(self.cache, self._embed)
        self.metrics = FeatureCacheMetrics(pb_utils, labels, self.cache)

    async def _embed(self, texts, model=None):
        input_ids, attention_mask = self.cache.tokenize(texts)  # (M, T) each
        return await embed_via_bls(
            pb_utils, model or self.embedder_model, input_ids, attention_mask, self.embedder_max_batch
        )

    async def _embed_in_background(self, texts):
        return await self._embed(texts, self.background_model)

    async def execute(self, requests):
        parsed = [self._parse(r) for r in requests]
        batch = self.cache.begin(parsed)
        if batch.missing and self.policy is FreshTextPolicy.ASYNC:
            self.cache.fall_back(batch, self.dim)  # scored now with the unseen-text row
            self.background.submit(batch.missing_keys, batch.missing)  # a task on this loop; outlives the execute
        ready, waiting = batch.partition()
        self._report_metrics()  # before answering: a client that reads the metrics next sees its lookups
        self._answer(requests, batch, ready)
        if waiting:  # strict: embedded in a task, answered when it ends; the next execute can run meanwhile
            self.misses.start(batch, lambda: self._finish(requests, batch, waiting))
        return None

    def _finish(self, requests, batch, waiting):
        self._report_metrics()
        self._answer(requests, batch, waiting)

    def _answer(self, requests, batch, indices):
        responses = scene_responses(pb_utils, batch.results(indices), self.emb_name, self.ids_name, self.batched)
        send_responses(pb_utils, [requests[i] for i in indices], responses)

    def _parse(self, request):
        texts, user_id, item_ids = (to_numpy(pb_utils.get_input_tensor_by_name(request, name))
                                    for name in (self.text_name, self.user_name, self.items_name))
        return self.cache.parse_request(texts, user_id, item_ids, self.max_candidates)

    def _report_metrics(self):
        self.metrics.report(self.cache, self.background, self.misses)

    def finalize(self):
        self.background.close()
