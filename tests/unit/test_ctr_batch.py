"""score_batch: one graph run for a dynamic batch of ragged ctr requests, errors answered per request."""

from __future__ import annotations

import numpy as np
import pytest

from larr.serving.ctr_batch import CTRRequest, score_batch
from larr.serving.errors import RequestError

K, D = 3, 4


def request(user: int, items: list[int], seed: int, batch_axis: bool = False) -> CTRRequest:
    rng = np.random.default_rng(seed)
    scene, ids = rng.standard_normal((K, D)).astype(np.float32), np.arange(K, dtype=np.int64) + seed
    user_id, item_ids = np.array([user]), np.array(items)
    if batch_axis:  # as Triton hands a batched model each request: a leading axis of 1
        scene, ids, user_id, item_ids = scene[None], ids[None], user_id[None], item_ids[None]
    return CTRRequest(scene, ids, user_id, item_ids)


def fake_graph(calls: list):
    """A stand-in for the batched graph whose score depends on every input of the candidate's own request."""

    def run(inputs):
        scene_emb, scene_ids, user_id, item_ids, item_request = inputs
        calls.append(tuple(x.shape for x in inputs))
        per_request = scene_emb.sum(axis=(1, 2)) + scene_ids.sum(axis=1) + 100 * user_id[:, 0]  # (B,)
        return per_request[item_request] + 1000 * item_ids  # (T,)

    return run


def expected(r: CTRRequest) -> np.ndarray:
    """The fake graph's score computed for one request on its own."""
    base = r.scene_emb.sum() + r.scene_ids.sum() + 100 * int(np.asarray(r.user_id).reshape(-1)[0])
    return (base + 1000 * np.asarray(r.item_ids).reshape(-1)).astype(np.float32)


@pytest.mark.parametrize("batch_axis", [False, True])
def test_ragged_requests_are_scored_in_one_run_and_split_back(batch_axis):
    requests = [request(1, [5, 6, 7], 0, batch_axis), request(2, [9], 1, batch_axis), request(3, [1, 2], 2, batch_axis)]
    calls: list = []
    results = score_batch(fake_graph(calls), requests, max_candidates=10)
    assert calls == [((3, K, D), (3, K), (3, 1), (6,), (6,))]  # one run for the whole batch
    for got, r in zip(results, requests):
        np.testing.assert_allclose(got, expected(r), rtol=1e-6)


def test_invalid_requests_are_answered_alone_and_the_rest_are_scored():
    requests = [request(1, [5, 6], 0), request(-1, [9], 1), request(2, list(range(11)), 2), request(3, [4], 3)]
    calls: list = []
    results = score_batch(fake_graph(calls), requests, max_candidates=10)
    assert isinstance(results[1], RequestError) and "USER_ID must be >= 0" in str(results[1])
    assert isinstance(results[2], RequestError) and "at most 10" in str(results[2])
    np.testing.assert_allclose(results[0], expected(requests[0]), rtol=1e-6)
    np.testing.assert_allclose(results[3], expected(requests[3]), rtol=1e-6)
    assert calls == [((2, K, D), (2, K), (2, 1), (3,), (3,))]


def test_a_batch_of_only_invalid_requests_runs_nothing():
    calls: list = []
    results = score_batch(fake_graph(calls), [request(1, [], 0)], max_candidates=10)
    assert isinstance(results[0], RequestError) and calls == []


def test_a_graph_that_returns_the_wrong_count_is_a_server_fault():
    with pytest.raises(RuntimeError, match="2 candidates"):
        score_batch(lambda inputs: np.zeros(5), [request(1, [5, 6], 0)], max_candidates=10)
