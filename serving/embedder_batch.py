"""Checking and batching the ``embedder`` model's requests (importable and tested without Triton).

In the ensemble only feature_cache calls the embedder, with inputs its tokenizer made; but any gRPC client
can call ``embedder`` directly. Its requests are checked one by one *before* they are padded into one
run, because one token id outside the vocabulary fails the whole run (ONNX Runtime's Gather, torch's
``index out of range``; on CUDA a device-side assert that breaks the process) and with it every request
of the dynamic batch -- other clients' cache misses included::

    requests   b = 0: input_ids, attention_mask (b_0, T_0); b = 1: (b_1, T_1); ...
    checks     per request: shapes, dtype, ids in [0, vocab_size), masks right-padded   -> else RequestError
    run        the valid ones right-padded to T = max T_i, concatenated: (sum b_i, T) -> (sum b_i, D)
    responses  split back: (b_0, D), (b_1, D), ...

Padding sits after each row's last real token and is masked, so it cannot change an embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from larr.contract import ATTENTION_MASK, INPUT_IDS, PARAM_VOCAB_SIZE
from larr.serving.errors import RequestError
from larr.serving.model_config import model_parameters
from larr.serving.tensors import split_rows


@dataclass(frozen=True)
class EmbedderLimits:
    """What one embedder request may hold."""

    vocab_size: int  # rows of the model's token-embedding table: ids must be in [0, vocab_size)

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> EmbedderLimits:
        return cls(vocab_size=int(model_parameters(config)[PARAM_VOCAB_SIZE]))


@dataclass(frozen=True)
class EmbedderRequest:
    """One request's inputs as Triton hands them to the batched embedder."""

    input_ids: np.ndarray  # (b, T) int64, right-padded
    attention_mask: np.ndarray  # (b, T) int64: ones, then zeros


def validate_embedder_request(request: EmbedderRequest, limits: EmbedderLimits) -> None:
    """Raise :class:`RequestError` unless the request is what :class:`~larr.tokenization.EmbeddingTokenizer`
    could have made: (b, T) int64 ids in the vocabulary, and a mask of the same shape that marks each row's
    first tokens as real (at least one) and the rest as padding -- the embedding is read at the last real
    token, ``attention_mask.sum() - 1``, so any other mask pools the wrong position."""
    ids, mask = np.asarray(request.input_ids), np.asarray(request.attention_mask)
    for name, value in ((INPUT_IDS, ids), (ATTENTION_MASK, mask)):
        if value.dtype != np.int64:
            raise RequestError(f"{name} must be INT64, got {value.dtype}")
        if value.ndim != 2 or 0 in value.shape:
            raise RequestError(f"{name} must be (texts, tokens) with at least one of each, got shape {value.shape}")
    if ids.shape != mask.shape:
        raise RequestError(f"{ATTENTION_MASK} has shape {mask.shape} but {INPUT_IDS} has {ids.shape}: they must match")
    outside = np.argwhere((ids < 0) | (ids >= limits.vocab_size))
    if outside.size:
        row, column = (int(i) for i in outside[0])
        raise RequestError(
            f"{INPUT_IDS}[{row}, {column}] = {int(ids[row, column])} is outside the vocabulary [0, {limits.vocab_size})"
        )
    # right padding: every value 0 or 1, never rising along a row, and the first token real
    well_formed = ((mask == 0) | (mask == 1)).all(axis=1) & (np.diff(mask, axis=1) <= 0).all(axis=1) & (mask[:, 0] == 1)
    bad_rows = np.flatnonzero(~well_formed)
    if bad_rows.size:
        row = int(bad_rows[0])
        raise RequestError(
            f"{ATTENTION_MASK}[{row}] = {mask[row].tolist()}: each row must be ones then zeros (right padding) "
            "with at least one 1"
        )


def embed_batch(
    run: Callable[[np.ndarray, np.ndarray], Any],
    requests: Sequence[EmbedderRequest],
    limits: EmbedderLimits,
) -> list[Any]:
    """Per request: its embeddings (b_i, D) -- whatever ``run`` returns (a NumPy array or a torch tensor),
    split by rows -- or the :class:`RequestError` to answer it with.

    ``run(input_ids, attention_mask)`` takes (B, T) int64 each and returns (B, D); it runs once, for the
    valid requests only.
    """
    results: list[Any] = [None] * len(requests)
    valid: list[int] = []
    for index, request in enumerate(requests):
        try:
            validate_embedder_request(request, limits)
        except RequestError as error:
            results[index] = error
            continue
        valid.append(index)
    if not valid:
        return results
    width = max(requests[i].input_ids.shape[1] for i in valid)  # T

    def padded(value: np.ndarray) -> np.ndarray:  # (b, T_i) -> (b, T): zeros after the real tokens
        return np.pad(value, ((0, 0), (0, width - value.shape[1])))

    input_ids = np.concatenate([padded(requests[i].input_ids) for i in valid])  # (B, T)
    attention_mask = np.concatenate([padded(requests[i].attention_mask) for i in valid])  # (B, T)
    embeddings = run(input_ids, attention_mask)  # (B, D)
    rows = [len(requests[i].input_ids) for i in valid]
    if embeddings.shape[0] != sum(rows):
        raise RuntimeError(f"the embedder returned {tuple(embeddings.shape)} for {sum(rows)} texts")
    for index, part in zip(valid, split_rows(embeddings, rows)):
        results[index] = part
    return results
