"""Triton python-backend adapter for ``fulltext_embed``, the full-text baseline's first step
(logic: larr.benchmarks.fulltext_scenes).

Every request's K scene texts become one whole-scene text; the texts of all requests of one execute()
go to the embedder in ONE BLS request (split only where they exceed the embedder's max batch size, the
parts sent concurrently). No cache: the LLM reads the whole scene on every request.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.benchmarks.fulltext_scenes import FullTextScenes
from larr.contract import PARAM_EMBEDDER_MAX_BATCH, PARAM_EMBEDDER_MODEL, PARAM_SCENE_FEATURES
from larr.serving.bls import embed_via_bls, scene_responses
from larr.serving.errors import RequestError
from larr.serving.runtime import model_parameters, tensor_names
from larr.serving.tensors import to_numpy


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        (self.text_name,), (self.emb_name, self.ids_name) = tensor_names(config)
        self.batched = config["max_batch_size"] > 0  # outputs get the request's batch axis
        self.embedder_model = params[PARAM_EMBEDDER_MODEL]
        self.embedder_max_batch = int(params[PARAM_EMBEDDER_MAX_BATCH])
        self.scenes = FullTextScenes.from_directory(
            f"{args['model_repository']}/{args['model_version']}", json.loads(params[PARAM_SCENE_FEATURES])
        )

    async def execute(self, requests):
        parsed = [self.scenes.parse(to_numpy(pb_utils.get_input_tensor_by_name(r, self.text_name))) for r in requests]
        texts = self.scenes.texts(parsed)
        embeddings = None
        if texts:
            input_ids, attention_mask = self.scenes.tokenize(texts)  # (M, T) each
            try:
                embeddings = await embed_via_bls(pb_utils, self.embedder_model, input_ids, attention_mask, self.embedder_max_batch)
            except RequestError as error:  # the embedder failed: every request that needed it fails
                parsed = [p if isinstance(p, RequestError) else error for p in parsed]
        return scene_responses(pb_utils, self.scenes.results(parsed, embeddings), self.emb_name, self.ids_name,
                               self.batched)
