"""Triton python-backend adapter for ``ctr``: aggregation encoder + CTR head (logic: larr.serving.ctr_batch).

Tensor names come from the model config, whose inputs are, in order, the scene embeddings, the scene
ids, the user id and the candidate ids. Every request is checked on its own first
(larr.serving.ctr_request: ``ctr`` can be called directly, not only by the ensemble), so a bad one gets
its own INVALID_ARGUMENT and never fails the others. Batched (max_batch_size > 0): one execute scores the
valid requests of the dynamic batch in one run of the batched graph; otherwise one run per request.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.contract import ITEM_REQUEST
from larr.serving.ctr_batch import score_batch
from larr.serving.ctr_request import CTRLimits, CTRRequest, validate_ctr_inputs
from larr.serving.errors import RequestError, error_response
from larr.serving.runtime import load_runtime, tensor_names
from larr.serving.tensors import output_tensor, to_numpy


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names, (self.output_name,) = tensor_names(config)
        self.limits = CTRLimits.from_model_config(config)
        self.batched = config["max_batch_size"] > 0
        extra = (ITEM_REQUEST,) if self.batched else ()
        self.runtime = load_runtime(f"{args['model_repository']}/{args['model_version']}", config, extra_inputs=extra)

    def execute(self, requests):
        inputs = [CTRRequest(*(to_numpy(pb_utils.get_input_tensor_by_name(r, name)) for name in self.input_names))
                  for r in requests]
        if self.batched:
            results = score_batch(self.runtime.run_numpy, inputs, self.limits)
            return [self._response(result, batch_axis=True) for result in results]
        responses = []
        for request in inputs:
            try:
                validate_ctr_inputs(request, self.limits)
            except RequestError as error:
                responses.append(self._response(error))
                continue
            (ctr,) = self.runtime.run([request.scene_emb, request.scene_ids, request.user_id, request.item_ids])  # (N,)
            responses.append(self._response(ctr))
        return responses

    def _response(self, result, batch_axis=False):
        if isinstance(result, RequestError):
            return error_response(pb_utils, result)
        return pb_utils.InferenceResponse([output_tensor(pb_utils, self.output_name, result[None] if batch_axis else result)])
