"""Triton python-backend adapter for ``feature_cache`` (logic: larr.serving.feature_cache).

Each request is checked first, its scene texts and its ids (the ensemble's only check before the gpu
target's TensorRT ctr plan, see larr.export.repository.ensemble_config); a bad one is answered alone.

All requests of one execute() are looked up together; their misses, deduplicated, go to the embedder
in ONE BLS request (split only where they exceed the embedder's max batch size, those parts sent
concurrently). The store is the one the model config's ``scene_store`` names (larr.serving.stores);
its counters are exported as Triton custom metrics (larr.serving.cache_metrics).

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
    PARAM_MAX_CANDIDATES,
    PARAM_SCENE_FEATURES,
)
from larr.serving.bls import embed_via_bls, scene_responses
from larr.serving.cache_metrics import FeatureCacheMetrics
from larr.serving.errors import RequestError
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.fresh_text import BackgroundEmbedder, FreshTextPolicy
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
        self.metrics = FeatureCacheMetrics(pb_utils, labels, self.cache)
        self.background = BackgroundEmbedder(
            self._embed, self.cache.store, self.embedder_max_batch, on_batch=self._report_metrics
        )

    async def _embed(self, texts):
        input_ids, attention_mask = self.cache.tokenize(texts)  # (M, T) each
        return await embed_via_bls(pb_utils, self.embedder_model, input_ids, attention_mask, self.embedder_max_batch)

    async def execute(self, requests):
        parsed = [self._parse(r) for r in requests]
        batch = self.cache.begin(parsed)
        if batch.missing and self.policy is FreshTextPolicy.ASYNC:
            self.cache.fall_back(batch, self.dim)  # scored now with the unseen-text row
            self.background.submit(batch.missing_keys, batch.missing)  # a task on this loop; outlives the execute
        elif batch.missing:
            try:
                self.cache.complete(batch, await self._embed(batch.missing))  # (M, D)
            except RequestError as error:  # the embedder failed: every request that needed it fails
                batch.fail(error)
        self._report_metrics()
        return scene_responses(pb_utils, batch.results(), self.emb_name, self.ids_name, self.batched)

    def _parse(self, request):
        texts, user_id, item_ids = (to_numpy(pb_utils.get_input_tensor_by_name(request, name))
                                    for name in (self.text_name, self.user_name, self.items_name))
        return self.cache.parse_request(texts, user_id, item_ids, self.max_candidates)

    def _report_metrics(self):
        self.metrics.report(self.cache, self.background)

    def finalize(self):
        self.background.close()
