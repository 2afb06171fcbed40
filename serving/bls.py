"""What the python-backend models that call the embedder share: one BLS embedding call and the
per-request responses of a scene step. ``pb_utils`` is passed in, so this imports without Triton."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from larr.contract import ATTENTION_MASK, EMBEDDING, INPUT_IDS
from larr.serving.errors import EmbedderError, RequestError, error_response
from larr.serving.tensors import to_numpy


async def embed_via_bls(
    pb_utils: Any, model_name: str, input_ids: np.ndarray, attention_mask: np.ndarray, max_batch: int
) -> np.ndarray:
    """(M, T) token ids -> (M, D) embeddings from ``model_name``.

    One BLS request carries all M texts; only where M exceeds the embedder's max batch size is it split,
    and the parts are sent concurrently. Raises :class:`EmbedderError` with the embedder's message.
    """
    parts = [slice(start, start + max_batch) for start in range(0, len(input_ids), max_batch)]
    # The cache keeps host arrays, so the embeddings are asked for in host memory: with the embedder on a
    # GPU, Triton copies them out, and this (CPU) process never touches CUDA.
    host_memory = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
    replies = await asyncio.gather(*(
        pb_utils.InferenceRequest(
            model_name=model_name,
            inputs=[pb_utils.Tensor(INPUT_IDS, input_ids[part]), pb_utils.Tensor(ATTENTION_MASK, attention_mask[part])],
            requested_output_names=[EMBEDDING],
            preferred_memory=host_memory,
        ).async_exec()
        for part in parts
    ))
    outputs = []
    for reply in replies:
        if reply.has_error():
            raise EmbedderError(f"the embedder failed: {reply.error().message()}")
        outputs.append(to_numpy(pb_utils.get_output_tensor_by_name(reply, EMBEDDING)))
    return np.concatenate(outputs)


def send_responses(pb_utils: Any, requests: Sequence[Any], responses: Sequence[Any]) -> None:
    """Answer each request with its response through its response sender: one final response each, as a
    non-decoupled model that returns None from ``execute`` must (larr.serving.miss_embedder)."""
    for request, response in zip(requests, responses, strict=True):
        request.get_response_sender().send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def scene_responses(
    pb_utils: Any,
    results: Sequence[tuple[np.ndarray, np.ndarray] | RequestError],
    emb_name: str,
    ids_name: str,
    batched: bool = False,
) -> list[Any]:
    """Per request: ``(SCENE_EMB, SCENE_IDS)`` outputs, or an error response with the request's message
    (``INVALID_ARGUMENT`` for a malformed request, ``INTERNAL`` for an embedder failure).

    ``batched`` (the model's max_batch_size > 0): every output gets the request's batch axis of 1,
    ``(K, D) -> (1, K, D)`` and ``(K,) -> (1, K)``.
    """
    responses = []
    for result in results:
        if isinstance(result, RequestError):
            responses.append(error_response(pb_utils, result))
        else:
            scene_emb, scene_ids = (x[None] for x in result) if batched else result
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(emb_name, scene_emb), pb_utils.Tensor(ids_name, scene_ids)]))
    return responses
