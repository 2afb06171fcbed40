"""Triton python-backend adapter for ``embedder`` (the CPU target, and GPU hosts without TensorRT).

Dynamic batching hands one execute() several requests, each (b_i, T_i); they are right-padded to a
common T (padding sits after ``<emb>`` and is masked, so it cannot change an embedding), run as one
(sum b_i, T) batch, and split back.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from larr.serving.runtime import load_runtime, tensor_names
from larr.serving.tensors import output_tensor, split_rows, to_numpy


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        (self.ids_name, self.mask_name), (self.output_name,) = tensor_names(config)
        self.runtime = load_runtime(f"{args['model_repository']}/{args['model_version']}", config)

    def execute(self, requests):
        ids = [to_numpy(pb_utils.get_input_tensor_by_name(r, self.ids_name)) for r in requests]
        masks = [to_numpy(pb_utils.get_input_tensor_by_name(r, self.mask_name)) for r in requests]
        width = max(x.shape[1] for x in ids)
        input_ids = np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in ids])  # (B, T)
        attention_mask = np.concatenate([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in masks])  # (B, T)
        (embeddings,) = self.runtime.run([input_ids, attention_mask])  # (B, D)
        return [
            pb_utils.InferenceResponse([output_tensor(pb_utils, self.output_name, part)])
            for part in split_rows(embeddings, [len(x) for x in ids])
        ]
