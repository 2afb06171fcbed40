"""embed_batch / validate_embedder_request: every embedder request checked on its own, the valid ones run once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import json_format

from larr.export.model_configs import embedder_config
from larr.export.options import ModelFacts, RepositoryOptions
from larr.serving.embedder_batch import EmbedderLimits, EmbedderRequest, embed_batch, validate_embedder_request
from larr.serving.errors import RequestError

VOCAB = 50
LIMITS = EmbedderLimits(vocab_size=VOCAB)


def request(*rows: list[int]) -> EmbedderRequest:
    """Right-padded (b, T) ids and mask from unpadded rows, as the tokenizer makes them."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return EmbedderRequest(ids, mask)


def fake_embedder(calls: list):
    """A stand-in whose row depends only on the row's real tokens (as the real embedder's does)."""

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        calls.append(input_ids.shape)
        real = input_ids * attention_mask  # (B, T)
        return np.stack([real.sum(axis=1), attention_mask.sum(axis=1), real[:, 0]], axis=1).astype(np.float32)  # (B, 3)

    return run


def expected(*rows: list[int]) -> np.ndarray:
    """The fake embedder's rows computed from the unpadded tokens alone."""
    return np.array([[sum(r), len(r), r[0]] for r in rows], np.float32)


def test_requests_of_different_lengths_run_once_and_split_back():
    rows = [[[3, 4, 5]], [[7], [8, 9, 10, 11, 12]], [[49, 1]]]
    calls: list = []
    results = embed_batch(fake_embedder(calls), [request(*r) for r in rows], LIMITS)
    assert calls == [(4, 5)]  # one run: 1 + 2 + 1 texts, padded to the longest (5)
    for got, r in zip(results, rows):
        np.testing.assert_array_equal(got, expected(*r))


def test_a_torch_output_is_split_by_rows_too():
    run = fake_embedder([])
    results = embed_batch(lambda ids, mask: torch.from_numpy(run(ids, mask)), [request([1, 2]), request([3], [4])], LIMITS)
    assert [tuple(r.shape) for r in results] == [(1, 3), (2, 3)] and all(isinstance(r, torch.Tensor) for r in results)
    np.testing.assert_array_equal(results[1].numpy(), expected([3], [4]))


def with_mask(r: EmbedderRequest, mask) -> EmbedderRequest:
    return EmbedderRequest(r.input_ids, np.array(mask, np.int64))


BAD = {
    "id at the vocabulary size": (request([1, VOCAB, 2]), f"input_ids[0, 1] = {VOCAB} is outside the vocabulary [0, {VOCAB})"),
    "huge id": (request([1], [2, 10**9]), f"input_ids[1, 1] = 1000000000 is outside the vocabulary [0, {VOCAB})"),
    "negative id": (request([-1, 2]), f"input_ids[0, 0] = -1 is outside the vocabulary [0, {VOCAB})"),
    "mask narrower": (with_mask(request([1, 2, 3]), [[1, 1]]), "attention_mask has shape (1, 2) but input_ids has (1, 3)"),
    "mask of other rows": (with_mask(request([1, 2]), [[1, 1], [1, 0]]), "attention_mask has shape (2, 2) but input_ids"),
    "left padding": (with_mask(request([1, 2, 3]), [[0, 1, 1]]), "attention_mask[0] = [0, 1, 1]: each row must be ones"),
    "a hole": (with_mask(request([1, 2, 3]), [[1, 0, 1]]), "attention_mask[0] = [1, 0, 1]"),
    "no real token": (with_mask(request([1, 2], [3, 4]), [[1, 1], [0, 0]]), "attention_mask[1] = [0, 0]"),
    "not 0 or 1": (with_mask(request([1, 2]), [[2, 1]]), "attention_mask[0] = [2, 1]"),
    "int32 ids": (EmbedderRequest(np.ones((1, 2), np.int32), np.ones((1, 2), np.int64)), "input_ids must be INT64, got int32"),
    "one axis": (EmbedderRequest(np.ones(3, np.int64), np.ones(3, np.int64)), "input_ids must be (texts, tokens)"),
    "no tokens": (EmbedderRequest(np.ones((2, 0), np.int64), np.ones((2, 0), np.int64)), "got shape (2, 0)"),
}


@pytest.mark.parametrize("case", BAD)
def test_each_bad_request_gets_its_own_error_and_the_others_are_embedded(case):
    bad, message = BAD[case]
    good = [[5, 6]], [[7], [8, 9]]
    calls: list = []
    results = embed_batch(fake_embedder(calls), [request(*good[0]), bad, request(*good[1])], LIMITS)
    assert isinstance(results[1], RequestError) and message in str(results[1])
    assert results[1].client_fault  # INVALID_ARGUMENT: the caller's mistake
    np.testing.assert_array_equal(results[0], expected(*good[0]))
    np.testing.assert_array_equal(results[2], expected(*good[1]))
    assert calls == [(3, 2)]  # the bad request never reached the run


def test_the_last_vocabulary_id_and_full_rows_are_accepted():
    validate_embedder_request(request([VOCAB - 1, 0, 1], [2, 3, 4]), LIMITS)


def test_a_batch_of_only_bad_requests_runs_nothing():
    calls: list = []
    results = embed_batch(fake_embedder(calls), [BAD["negative id"][0]], LIMITS)
    assert isinstance(results[0], RequestError) and calls == []


def test_an_embedder_that_returns_the_wrong_count_is_a_server_fault():
    with pytest.raises(RuntimeError, match="for 2 texts"):
        embed_batch(lambda ids, mask: np.zeros((3, 4), np.float32), [request([1], [2])], LIMITS)


def test_limits_come_from_the_exported_config():
    """What export writes is what the adapter reads: the embedder's own vocabulary size, no new literal."""
    facts = ModelFacts(("weather",), embedding_dim=8, scene_inputs=1, embedder_version="v", max_length=16,
                       vocab_size=321, scene_vocab_sizes=(4,))
    # as Triton hands it to the python backend: JSON with the proto's field names
    config = json_format.MessageToDict(embedder_config(RepositoryOptions(), facts), preserving_proto_field_name=True)
    assert EmbedderLimits.from_model_config(config) == EmbedderLimits(vocab_size=321)
