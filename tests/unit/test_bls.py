"""The shared BLS helper with a stand-in for ``triton_python_backend_utils`` (only what it touches)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from larr.contract import ATTENTION_MASK, EMBEDDING, INPUT_IDS
from larr.serving.bls import embed_via_bls, scene_responses
from larr.serving.errors import EmbedderError, RequestError

TRITONSERVER_MEMORY_CPU = 1  # stands in for the enum value pb_utils exports


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, np.asarray(array)

    def is_cpu(self):
        return True

    def as_numpy(self):
        return self.array


class FakeReply:
    def __init__(self, output=None, error=None):
        self.output, self._error = output, error

    def has_error(self):
        return self._error is not None

    def error(self):
        return SimpleNamespace(message=lambda: self._error)


def fake_pb_utils(calls: list, fail: bool = False):
    class InferenceRequest:
        def __init__(self, model_name, inputs, requested_output_names, preferred_memory):
            self.model_name, self.inputs, self.outputs = model_name, {t.name: t.array for t in inputs}, requested_output_names
            self.preferred_memory = preferred_memory

        async def async_exec(self):
            # the cache stores host arrays: the embeddings must be asked for in CPU memory
            assert self.preferred_memory == (TRITONSERVER_MEMORY_CPU, 0)
            calls.append((self.model_name, self.inputs[INPUT_IDS].shape))
            if fail:
                return FakeReply(error="out of memory")
            ids = self.inputs[INPUT_IDS]
            return FakeReply(output=FakeTensor(EMBEDDING, ids[:, :1].astype(np.float32) * np.ones((1, 3), np.float32)))

    return SimpleNamespace(
        Tensor=FakeTensor,
        InferenceRequest=InferenceRequest,
        PreferredMemory=lambda kind, device_id: (kind, device_id),
        TRITONSERVER_MEMORY_CPU=TRITONSERVER_MEMORY_CPU,
        get_output_tensor_by_name=lambda reply, name: reply.output,
        InferenceResponse=lambda outputs=None, error=None: SimpleNamespace(outputs=outputs, error=error),
        TritonError=FakeTritonError,
    )


class FakeTritonError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


def test_one_call_unless_over_max_batch_and_order_kept():
    ids = np.arange(10, dtype=np.int64)[:, None] * np.ones((1, 4), np.int64)
    mask = np.ones_like(ids)
    calls: list = []
    out = asyncio.run(embed_via_bls(fake_pb_utils(calls), "embedder", ids, mask, max_batch=64))
    assert calls == [("embedder", (10, 4))]
    calls.clear()
    split = asyncio.run(embed_via_bls(fake_pb_utils(calls), "embedder", ids, mask, max_batch=4))
    assert [shape for _, shape in calls] == [(4, 4), (4, 4), (2, 4)]
    np.testing.assert_array_equal(split, out)
    np.testing.assert_array_equal(out[:, 0], np.arange(10))
    assert ATTENTION_MASK  # the mask travels with the ids (same names as the contract)


def test_embedder_error_is_a_server_fault():
    with pytest.raises(EmbedderError, match="the embedder failed: out of memory") as raised:
        asyncio.run(embed_via_bls(fake_pb_utils([], fail=True), "embedder", np.ones((2, 3), np.int64), np.ones((2, 3), np.int64), 8))
    assert not raised.value.client_fault  # answered INTERNAL: the request was fine


def test_scene_responses_keep_errors_per_request():
    pb = fake_pb_utils([])
    good = (np.zeros((2, 3), np.float32), np.array([1, 0]))
    results = [good, RequestError("SCENE_TEXT[0] (weather) is empty"), EmbedderError("the embedder failed: boom")]
    responses = scene_responses(pb, results, "SCENE_EMB", "SCENE_IDS")
    assert responses[0].error is None and [t.name for t in responses[0].outputs] == ["SCENE_EMB", "SCENE_IDS"]
    # the client's mistake is INVALID_ARGUMENT, the server's fault INTERNAL: a client knows whether to retry
    assert (responses[1].error.message, responses[1].error.code) == ("SCENE_TEXT[0] (weather) is empty", "INVALID_ARG")
    assert (responses[2].error.message, responses[2].error.code) == ("the embedder failed: boom", "INTERNAL")
