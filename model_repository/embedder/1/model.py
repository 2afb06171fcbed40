"""Triton python-backend adapter for ``embedder`` (the CPU target, and GPU hosts without TensorRT).

Dynamic batching hands one execute() several requests, each (b_i, T_i). Each is checked on its own
(larr.serving.embedder_batch: any gRPC client can call the embedder, and one token id outside the
vocabulary would fail the whole run), so a bad one gets its own INVALID_ARGUMENT; the valid ones are
right-padded to a common T, run as one (sum b_i, T) batch, and split back.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.serving.embedder_batch import EmbedderLimits, EmbedderRequest, embed_batch
from larr.serving.errors import RequestError, error_response
from larr.serving.model_config import apply_process_nice, model_parameters
from larr.serving.runtime import load_runtime, tensor_names
from larr.serving.tensors import output_tensor, to_numpy


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        (self.ids_name, self.mask_name), (self.output_name,) = tensor_names(config)
        self.limits = EmbedderLimits.from_model_config(config)
        apply_process_nice(model_parameters(config))  # embedder_background: idle priority (larr.contract)
        self.runtime = load_runtime(f"{args['model_repository']}/{args['model_version']}", config)

    def execute(self, requests):
        inputs = [
            EmbedderRequest(
                to_numpy(pb_utils.get_input_tensor_by_name(r, self.ids_name)),  # (b, T)
                to_numpy(pb_utils.get_input_tensor_by_name(r, self.mask_name)),  # (b, T)
            )
            for r in requests
        ]
        results = embed_batch(lambda ids, mask: self.runtime.run([ids, mask])[0], inputs, self.limits)
        return [self._response(result) for result in results]

    def _response(self, result):
        if isinstance(result, RequestError):
            return error_response(pb_utils, result)
        return pb_utils.InferenceResponse([output_tensor(pb_utils, self.output_name, result)])  # (b, D)
