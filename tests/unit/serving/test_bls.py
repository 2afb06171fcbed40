"""The shared BLS helper over the python-backend stand-in (tests/fakes/pb_utils.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from larr.contract import ATTENTION_MASK, EMBEDDING, INPUT_IDS
from larr.serving.bls import embed_via_bls, scene_responses
from larr.serving.errors import EmbedderError, RequestError


def first_id_embedder(pb_utils):
    """An 'embedder' whose row for a text is its first token id, three times: (b, T) -> (b, 3)."""

    def execute(requests):
        ids = pb_utils.get_input_tensor_by_name(requests[0], INPUT_IDS).as_numpy()
        rows = ids[:, :1].astype(np.float32) * np.ones((1, 3), np.float32)  # (b, 3)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(EMBEDDING, rows)])]

    return execute


def test_one_call_unless_over_max_batch_and_order_kept(pb_utils):
    pb_utils.serve_model("embedder", first_id_embedder(pb_utils))
    ids = np.arange(10, dtype=np.int64)[:, None] * np.ones((1, 4), np.int64)
    mask = np.ones_like(ids)
    out = asyncio.run(embed_via_bls(pb_utils, "embedder", ids, mask, max_batch=64))
    (call,) = pb_utils.bls_requests
    assert call.model_name == "embedder" and call.requested_output_names() == [EMBEDDING]
    # the mask travels with the ids, under the contract's names
    np.testing.assert_array_equal(pb_utils.get_input_tensor_by_name(call, ATTENTION_MASK).as_numpy(), mask)
    # the cache stores host arrays: the embeddings must be asked for in CPU memory
    assert call.preferred_memory.preferred_memory_type == pb_utils.TRITONSERVER_MEMORY_CPU
    pb_utils.bls_requests.clear()
    split = asyncio.run(embed_via_bls(pb_utils, "embedder", ids, mask, max_batch=4))
    shapes = [pb_utils.get_input_tensor_by_name(r, INPUT_IDS).as_numpy().shape for r in pb_utils.bls_requests]
    assert shapes == [(4, 4), (4, 4), (2, 4)]
    np.testing.assert_array_equal(split, out)
    np.testing.assert_array_equal(out[:, 0], np.arange(10))


def test_embedder_error_is_a_server_fault(pb_utils):
    pb_utils.serve_model("embedder", lambda requests: [pb_utils.InferenceResponse(error=pb_utils.TritonError("out of memory"))])
    with pytest.raises(EmbedderError, match="the embedder failed: out of memory") as raised:
        asyncio.run(embed_via_bls(pb_utils, "embedder", np.ones((2, 3), np.int64), np.ones((2, 3), np.int64), 8))
    assert not raised.value.client_fault  # answered INTERNAL: the request was fine


def test_scene_responses_keep_errors_per_request(pb_utils):
    good = (np.zeros((2, 3), np.float32), np.array([1, 0]))
    results = [good, RequestError("SCENE_TEXT[0] (weather) is empty"), EmbedderError("the embedder failed: boom")]
    responses = scene_responses(pb_utils, results, "SCENE_EMB", "SCENE_IDS")
    assert not responses[0].has_error() and [t.name() for t in responses[0].output_tensors()] == ["SCENE_EMB", "SCENE_IDS"]
    # the client's mistake is INVALID_ARGUMENT, the server's fault INTERNAL: a client knows whether to retry
    errors = [(r.error().message(), r.error().code()) for r in responses[1:]]
    assert errors == [("SCENE_TEXT[0] (weather) is empty", pb_utils.TritonError.INVALID_ARG),
                      ("the embedder failed: boom", pb_utils.TritonError.INTERNAL)]
