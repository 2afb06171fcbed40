"""Triton python-backend adapter for ``feature_cache`` (logic: larr.serving.feature_cache).

All requests of one execute() are looked up together; their misses, deduplicated, go to the embedder
in ONE BLS request (split only where they exceed the embedder's max batch size, those parts sent
concurrently). The store is the one the model config's ``scene_store`` names (larr.serving.stores);
its counters (``SceneFeatureCache.metric_values``) are exported as Triton custom metrics.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.contract import (
    PARAM_EMBEDDER_MAX_BATCH,
    PARAM_EMBEDDER_MODEL,
    PARAM_EMBEDDER_VERSION,
    PARAM_SCENE_FEATURES,
)
from larr.serving.bls import embed_via_bls, scene_responses
from larr.serving.errors import RequestError
from larr.serving.feature_cache import CACHE_METRICS, SceneFeatureCache
from larr.serving.runtime import model_parameters, tensor_names
from larr.serving.stores import make_store
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
        exported = self.cache.metric_values()  # the metrics this store has (redis_* only with a Redis tier)
        self.families = {
            m.name: pb_utils.MetricFamily(
                name=f"larr_feature_cache_{m.name}", description=m.help,
                kind=pb_utils.MetricFamily.COUNTER if m.counter else pb_utils.MetricFamily.GAUGE,
            )
            for m in CACHE_METRICS if m.name in exported
        }
        self.metrics = {name: family.Metric(labels=labels) for name, family in self.families.items()}
        self.counters = {m.name for m in CACHE_METRICS if m.counter and m.name in exported}
        self.reported = dict.fromkeys(self.counters, 0.0)

    async def execute(self, requests):
        parsed = [self.cache.parse(to_numpy(pb_utils.get_input_tensor_by_name(r, self.text_name))) for r in requests]
        batch = self.cache.begin(parsed)
        if batch.missing:
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
        for name, value in self.cache.metric_values().items():
            if name not in self.counters:
                self.metrics[name].set(value)
            elif value > self.reported[name]:  # Prometheus counters only go up: send the increase
                self.metrics[name].increment(value - self.reported[name])
                self.reported[name] = value
