"""The ``feature_cache`` adapter (model_repository/feature_cache/1/model.py) over the pb_utils stand-in, its BLS
calls answered by the ``embedder`` adapter: every request gets the trained embedder's (K, D) rows for its scene
texts and the CTR model's (K,) field ids, through its response sender; texts the scene table holds are answered
at once, the misses of a whole execute go to the embedder in one BLS request, and a bad request is answered
INVALID_ARG alone. Under ``fresh_text_policy`` async a miss is answered with the unseen-text row now and is a
hit once the background embedder has run."""

from __future__ import annotations

import asyncio

import numpy as np

from larr.contract import INPUT_IDS, ITEM_IDS, SCENE_EMB, SCENE_IDS, SCENE_TEXT, UNSEEN_SCENE_FILL, USER_ID

UNSEEN = "pickled plum gelato, a search nobody made in training"


def scene_request(pb_utils, scene, user=7, items=(1, 2)):
    """What the batching ensemble sends: every input with a batch axis of 1."""
    return pb_utils.request({SCENE_TEXT: np.array([[t.encode() for t in scene]], dtype=object),
                             USER_ID: np.array([[user]], np.int64), ITEM_IDS: np.array([list(items)], np.int64)})


def answer(pb_utils, request):
    """The one final response ``request`` was sent, or None while it has none."""
    sender = request.response_sender
    if not sender.responses:
        return None
    assert sender.flags == [pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL]  # exactly one response, the final one
    return sender.responses[0]


def assert_scene(pb_utils, response, trained_models, scene, unseen=()):
    """SCENE_EMB (1, K, D) and SCENE_IDS (1, K) as the trained models compute them; ``unseen``: features answered
    with the unseen-text row."""
    assert not response.has_error(), response.error().message()
    emb = pb_utils.get_output_tensor_by_name(response, SCENE_EMB).as_numpy()
    ids = pb_utils.get_output_tensor_by_name(response, SCENE_IDS).as_numpy()
    expected = trained_models.embed_scene(scene)
    expected[list(unseen)] = UNSEEN_SCENE_FILL
    np.testing.assert_allclose(emb, expected[None], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ids, trained_models.scene_ids(scene)[None])


def with_unseen_search(trained_models, row):
    scene = list(trained_models.dataset.test.scene_row(row))
    scene[trained_models.features.index("recent_search")] = UNSEEN
    return scene


def test_hits_leave_at_once_the_misses_of_a_batch_go_in_one_bls_request_and_bad_requests_fail_alone(
    adapter, pb_utils, trained_models
):
    pb_utils.serve_model("embedder", adapter("embedder").execute)
    cache = adapter("feature_cache")
    known = list(trained_models.dataset.test.scene_row(0))  # every split's texts are in the scene table
    fresh = with_unseen_search(trained_models, 1)
    requests = [scene_request(pb_utils, known), scene_request(pb_utils, known[:-1]),
                scene_request(pb_utils, fresh), scene_request(pb_utils, fresh, user=8),
                scene_request(pb_utils, known, items=(-1,))]

    async def serve():
        assert await cache.execute(requests) is None  # answered through the response senders
        at_once = [answer(pb_utils, r) is not None for r in requests]
        await cache.misses.wait_idle()
        return at_once

    assert asyncio.run(serve()) == [True, True, False, False, True]
    responses = [answer(pb_utils, r) for r in requests]
    assert_scene(pb_utils, responses[0], trained_models, known)
    for response in responses[2:4]:
        assert_scene(pb_utils, response, trained_models, fresh)
    (bls,) = pb_utils.bls_requests  # one text missed by two requests: embedded once, in one call
    assert bls.model_name == "embedder" and pb_utils.get_input_tensor_by_name(bls, INPUT_IDS).as_numpy().shape[0] == 1
    for response, message in ((responses[1], f"{SCENE_TEXT} has {len(known) - 1} texts; the scene schema has {len(known)}"),
                              (responses[4], f"{ITEM_IDS}[0] = -1: ids must be >= 0")):
        assert response.error().code() == pb_utils.TritonError.INVALID_ARG
        assert response.error().message().startswith(message), response.error().message()


def test_async_answers_a_miss_with_the_unseen_row_now_and_serves_its_embedding_once_the_background_has_run(
    adapter, pb_utils, trained_models
):
    pb_utils.serve_model("embedder", adapter("embedder").execute)
    cache = adapter("feature_cache", fresh_text_policy="async")
    fresh = with_unseen_search(trained_models, 2)
    unseen = trained_models.features.index("recent_search")

    async def serve():
        first = scene_request(pb_utils, fresh)
        await cache.execute([first])
        answered_first = answer(pb_utils, first)  # before the background embedder has run
        await cache.background.wait_idle()
        second = scene_request(pb_utils, fresh)
        await cache.execute([second])
        return answered_first, answer(pb_utils, second)

    first, second = asyncio.run(serve())
    assert_scene(pb_utils, first, trained_models, fresh, unseen=[unseen])
    assert_scene(pb_utils, second, trained_models, fresh)
    assert len(pb_utils.bls_requests) == 1  # the background call; the second request was all hits
