"""The ``ctr`` adapter (model_repository/ctr/1/model.py) over the pb_utils stand-in: one execute scores a
dynamic batch of ragged requests as the trained CTR model scores each one on its own; a bad request is
answered INVALID_ARG alone and the rest of the batch is still scored."""

from __future__ import annotations

import numpy as np

from larr.contract import CTR, ITEM_IDS, SCENE_EMB, SCENE_IDS, USER_ID


def ctr_request(pb_utils, scene_emb, scene_ids, user, items):
    """What the batching ensemble sends: every input with a batch axis of 1."""
    return pb_utils.request({SCENE_EMB: scene_emb[None], SCENE_IDS: scene_ids[None],
                             USER_ID: np.array([[user]], np.int64), ITEM_IDS: np.array([items], np.int64)})


def test_a_batch_is_scored_like_the_trained_model_request_by_request_and_a_bad_request_fails_alone(
    adapter, pb_utils, trained_models
):
    ctr = adapter("ctr")
    test = trained_models.dataset.test
    num_items = trained_models.dataset.info.num_items
    cases = []
    for row, items in ((0, [0, 5, 17]), (1, [3]), (2, list(range(0, num_items, 9)) + [num_items + 4])):  # + cold start
        scene = test.scene_row(row)
        cases.append((trained_models.embed_scene(scene), trained_models.scene_ids(scene), int(test.user_id[row]), items))
    scene_emb, scene_ids, user, _ = cases[0]
    requests = [ctr_request(pb_utils, *case) for case in cases]
    requests.insert(1, ctr_request(pb_utils, scene_emb, scene_ids, user, [4, -3]))
    out_of_table = scene_ids.copy()
    out_of_table[0] = 10**6
    requests.append(ctr_request(pb_utils, scene_emb, out_of_table, user, [4]))

    responses = ctr.execute(requests)

    assert len(responses) == len(requests)
    for response, case in zip([responses[0], *responses[2:4]], cases):
        assert not response.has_error()
        served = pb_utils.get_output_tensor_by_name(response, CTR).as_numpy()  # (1, N)
        assert served.shape == (1, len(case[3])) and served.dtype == np.float32
        np.testing.assert_allclose(served[0], trained_models.score(*case), atol=1e-5, rtol=0)
    errors = [(r.error().code(), r.error().message()) for r in (responses[1], responses[4])]
    assert errors[0] == (pb_utils.TritonError.INVALID_ARG, f"{ITEM_IDS}[1] = -3: ids must be >= 0")
    assert errors[1][0] == pb_utils.TritonError.INVALID_ARG
    assert errors[1][1].startswith(f"{SCENE_IDS}[0] = {10**6} is outside scene feature 0's ids [0, ")
