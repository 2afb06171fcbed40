"""score_batch: one graph run for a dynamic batch of ragged ctr requests, errors answered per request;
validate_ctr_inputs: what one direct ``ctr`` call may hold."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import json_format

from larr.export.model_configs import ctr_config
from larr.export.options import ModelFacts, RepositoryOptions
from larr.serving.ctr_batch import score_batch
from larr.serving.ctr_request import CTRLimits, CTRRequest, validate_ctr_inputs
from larr.serving.errors import RequestError

K, D = 3, 4
LIMITS = CTRLimits(max_candidates=10, scene_shape=(K, D), scene_vocab_sizes=(6, 7, 8))  # request(seed <= 3) fits


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
    results = score_batch(fake_graph(calls), requests, LIMITS)
    assert calls == [((3, K, D), (3, K), (3, 1), (6,), (6,))]  # one run for the whole batch
    for got, r in zip(results, requests):
        np.testing.assert_allclose(got, expected(r), rtol=1e-6)


def test_invalid_requests_are_answered_alone_and_the_rest_are_scored():
    requests = [request(1, [5, 6], 0), request(-1, [9], 1), request(2, list(range(11)), 2), request(3, [4], 3)]
    calls: list = []
    results = score_batch(fake_graph(calls), requests, LIMITS)
    assert isinstance(results[1], RequestError) and "USER_ID must be >= 0" in str(results[1])
    assert isinstance(results[2], RequestError) and "at most 10" in str(results[2])
    np.testing.assert_allclose(results[0], expected(requests[0]), rtol=1e-6)
    np.testing.assert_allclose(results[3], expected(requests[3]), rtol=1e-6)
    assert calls == [((2, K, D), (2, K), (2, 1), (3,), (3,))]


def test_a_batch_of_only_invalid_requests_runs_nothing():
    calls: list = []
    results = score_batch(fake_graph(calls), [request(1, [], 0)], LIMITS)
    assert isinstance(results[0], RequestError) and calls == []


def test_a_graph_that_returns_the_wrong_count_is_a_server_fault():
    with pytest.raises(RuntimeError, match="2 candidates"):
        score_batch(lambda inputs: np.zeros(5), [request(1, [5, 6], 0)], LIMITS)


def with_scene(r: CTRRequest, scene_emb=None, scene_ids=None) -> CTRRequest:
    return CTRRequest(r.scene_emb if scene_emb is None else scene_emb, r.scene_ids if scene_ids is None else scene_ids,
                      r.user_id, r.item_ids)


def test_a_bad_scene_is_answered_alone_and_the_rest_are_scored_in_one_run():
    good = [request(1, [5, 6], 0, batch_axis=True), request(2, [7], 1, batch_axis=True)]
    nan_scene = good[0].scene_emb.copy()
    nan_scene[0, 1, 2] = np.nan
    bad = [
        with_scene(good[0], scene_ids=np.array([[0, 1, 8]])),  # feature 2 has 8 rows: ids 0..7
        with_scene(good[0], scene_emb=nan_scene),
    ]
    calls: list = []
    results = score_batch(fake_graph(calls), [bad[0], good[0], bad[1], good[1]], LIMITS)
    assert str(results[0]) == "SCENE_IDS[2] = 8 is outside scene feature 2's ids [0, 8)"
    assert str(results[2]) == "SCENE_EMB holds NaN or infinite values"
    np.testing.assert_allclose(results[1], expected(good[0]), rtol=1e-6)
    np.testing.assert_allclose(results[3], expected(good[1]), rtol=1e-6)
    assert calls == [((2, K, D), (2, K), (2, 1), (3,), (3,))]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scene_ids": np.array([0, -1, 0])}, "SCENE_IDS[1] = -1 is outside scene feature 1's ids [0, 7)"),
        ({"scene_ids": np.array([5, 6, 7])}, None),  # the last id of every table is still inside it
        ({"scene_ids": np.array([6, 0, 0])}, "SCENE_IDS[0] = 6 is outside scene feature 0's ids [0, 6)"),
        ({"scene_ids": np.array([0, 0])}, "SCENE_IDS must hold one id per scene feature, (3,), got (2,)"),
        ({"scene_emb": np.zeros((K, D + 1), np.float32)}, f"SCENE_EMB must be ({K}, {D}), got ({K}, {D + 1})"),
        ({"scene_emb": np.full((1, K, D), np.inf, np.float32)}, "SCENE_EMB holds NaN or infinite values"),
        ({"user_id": np.array([-3])}, "USER_ID must be >= 0, got -3"),  # validate_ctr_request's checks come along
        ({"item_ids": np.arange(11)}, "11 candidates; this server scores at most 10"),
    ],
)
def test_validate_ctr_inputs(change, message):
    base = request(1, [5, 6], 0)
    changed = CTRRequest(**{**base.__dict__, **change})
    if message is None:
        validate_ctr_inputs(changed, LIMITS)
        return
    with pytest.raises(RequestError) as error:
        validate_ctr_inputs(changed, LIMITS)
    assert message in str(error.value)


def test_ctr_limits_come_from_the_exported_config():
    """What export writes is what the adapter reads: the facts, not new literals."""
    facts = ModelFacts(("weather", "place"), embedding_dim=8, scene_inputs=2, embedder_version="v", max_length=16,
                       vocab_size=300, scene_vocab_sizes=(4, 9))
    # as Triton hands it to the python backend: JSON with the proto's field names
    config = json_format.MessageToDict(ctr_config(RepositoryOptions(max_candidates=77), facts), preserving_proto_field_name=True)
    assert CTRLimits.from_model_config(config) == CTRLimits(max_candidates=77, scene_shape=(2, 8), scene_vocab_sizes=(4, 9))
