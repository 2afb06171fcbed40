"""Triton python-backend adapter for ``ctr``: aggregation encoder + CTR head, one request at a time.

Logic lives in larr.serving (request validation, runtimes); tensor names come from the model config,
whose inputs are, in order, the scene embeddings, the scene ids, the user id and the candidate ids.
"""

import json

import triton_python_backend_utils as pb_utils

from larr.contract import PARAM_MAX_CANDIDATES
from larr.serving.ctr_request import validate_ctr_request
from larr.serving.errors import RequestError
from larr.serving.runtime import load_runtime, model_parameters, tensor_names
from larr.serving.tensors import output_tensor, to_numpy


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names, (self.output_name,) = tensor_names(config)
        self.max_candidates = int(model_parameters(config)[PARAM_MAX_CANDIDATES])
        self.runtime = load_runtime(f"{args['model_repository']}/{args['model_version']}", config)

    def execute(self, requests):
        responses = []
        for request in requests:
            scene_emb, scene_ids, user_id, item_ids = (
                to_numpy(pb_utils.get_input_tensor_by_name(request, name)) for name in self.input_names
            )
            try:
                validate_ctr_request(user_id, item_ids, self.max_candidates)
            except RequestError as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
                continue
            (ctr,) = self.runtime.run([scene_emb, scene_ids, user_id, item_ids])  # (N,)
            responses.append(pb_utils.InferenceResponse([output_tensor(pb_utils, self.output_name, ctr)]))
        return responses
