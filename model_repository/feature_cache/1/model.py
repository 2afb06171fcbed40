"""Triton python-backend adapter for ``feature_cache`` (logic: larr.serving.feature_cache).

All requests of one execute() are looked up together; their misses, deduplicated, go to the embedder
in ONE BLS request (split only where they exceed the embedder's max batch size, those parts sent
concurrently). Hit/miss/eviction counts are exported as Triton custom metrics.
"""

import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from larr.contract import (
    ATTENTION_MASK,
    EMBEDDING,
    INPUT_IDS,
    PARAM_CACHE_CAPACITY,
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_SCENE_FEATURES,
)
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.errors import RequestError
from larr.serving.runtime import model_parameters, tensor_names
from larr.serving.tensors import to_numpy


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        (self.text_name,), (self.emb_name, self.ids_name) = tensor_names(config)
        self.embedder_model = params[PARAM_EMBEDDER_MODEL]
        self.embedder_max_batch = int(params[PARAM_EMBEDDER_MAX_BATCH])
        version = params[PARAM_EMBEDDER_VERSION]
        self.cache = SceneFeatureCache.from_directory(
            f"{args['model_repository']}/{args['model_version']}",
            json.loads(params[PARAM_SCENE_FEATURES]),
            int(params[PARAM_CACHE_CAPACITY]),
            version,
        )
        # the families must outlive their metrics, or increment() fails
        labels = {"model": args["model_name"], "embedder_version": version}
        self.families = {
            name: pb_utils.MetricFamily(name=f"larr_feature_cache_{name}", description=text, kind=kind)
            for name, text, kind in (
                ("hits_total", "scene-feature lookups served from the cache", pb_utils.MetricFamily.COUNTER),
                ("misses_total", "scene-feature lookups that needed the embedder", pb_utils.MetricFamily.COUNTER),
                ("evictions_total", "entries evicted to keep the cache within its bound", pb_utils.MetricFamily.COUNTER),
                ("entries", "entries in the cache now", pb_utils.MetricFamily.GAUGE),
            )
        }
        self.metrics = {name: family.Metric(labels=labels) for name, family in self.families.items()}
        self.reported = (0, 0, 0)

    async def execute(self, requests):
        parsed = [self.cache.parse(to_numpy(pb_utils.get_input_tensor_by_name(r, self.text_name))) for r in requests]
        batch = self.cache.begin(parsed)
        if batch.missing:
            try:
                self.cache.complete(batch, await self._embed(*self.cache.tokenize(batch.missing)))
            except RequestError as error:  # the embedder failed: every request that needed it fails
                batch.requests = [error if not isinstance(p, RequestError) else p for p in batch.requests]
        self._report_metrics()
        responses = []
        for result in batch.results():
            if isinstance(result, RequestError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
            else:
                scene_emb, scene_ids = result  # (K, D), (K,)
                responses.append(
                    pb_utils.InferenceResponse([pb_utils.Tensor(self.emb_name, scene_emb), pb_utils.Tensor(self.ids_name, scene_ids)])
                )
        return responses

    async def _embed(self, input_ids, attention_mask):
        """(M, T) token ids -> (M, D) embeddings from the embedder model, via BLS."""
        parts = [slice(s, s + self.embedder_max_batch) for s in range(0, len(input_ids), self.embedder_max_batch)]
        replies = await asyncio.gather(*(
            pb_utils.InferenceRequest(
                model_name=self.embedder_model,
                inputs=[pb_utils.Tensor(INPUT_IDS, input_ids[p]), pb_utils.Tensor(ATTENTION_MASK, attention_mask[p])],
                requested_output_names=[EMBEDDING],
            ).async_exec()
            for p in parts
        ))
        outputs = []
        for reply in replies:
            if reply.has_error():
                raise RequestError(f"the embedder failed: {reply.error().message()}")
            outputs.append(to_numpy(pb_utils.get_output_tensor_by_name(reply, EMBEDDING)))
        return np.concatenate(outputs)

    def _report_metrics(self):
        counters = self.cache.counters
        now = (counters.hits, counters.misses, counters.evictions)
        for name, new, old in zip(("hits_total", "misses_total", "evictions_total"), now, self.reported):
            if new > old:
                self.metrics[name].increment(new - old)
        self.metrics["entries"].set(len(self.cache))
        self.reported = now
