"""The ``embedder`` adapter (model_repository/embedder/1/model.py) over the pb_utils stand-in: each request of
a dynamic batch, whatever its padded length, gets the trained TextEmbedder's rows for its own texts; a request
with a token id outside the vocabulary is answered INVALID_ARG alone."""

from __future__ import annotations

import numpy as np

from larr.contract import ATTENTION_MASK, EMBEDDING, INPUT_IDS
from larr.text import format_scene_feature


def test_each_request_gets_the_trained_embedders_rows_and_a_bad_one_fails_alone(adapter, pb_utils, trained_models):
    embedder = adapter("embedder")
    short = [format_scene_feature("weather", "sunny"), format_scene_feature("place", "home")]
    long = [format_scene_feature("recent_search", "spicy noodle soup near the office, and a bubble tea after")]
    vocabulary = trained_models.embedder.encoder.get_input_embeddings().num_embeddings
    bad_ids, bad_mask = trained_models.tokenizer(short)  # (2, T) each
    bad_ids[1, 0] = vocabulary
    requests = [pb_utils.request(dict(zip((INPUT_IDS, ATTENTION_MASK), trained_models.tokenizer(short)))),
                pb_utils.request({INPUT_IDS: bad_ids, ATTENTION_MASK: bad_mask}),
                pb_utils.request(dict(zip((INPUT_IDS, ATTENTION_MASK), trained_models.tokenizer(long))))]
    assert requests[0].inputs()[0].as_numpy().shape[1] < requests[2].inputs()[0].as_numpy().shape[1]  # padded apart

    first, refused, last = embedder.execute(requests)

    for response, texts in ((first, short), (last, long)):
        assert not response.has_error()
        rows = pb_utils.get_output_tensor_by_name(response, EMBEDDING).as_numpy()  # (b, D)
        assert rows.dtype == np.float32
        np.testing.assert_allclose(rows, trained_models.embed(texts), atol=1e-4, rtol=0)
    assert refused.error().code() == pb_utils.TritonError.INVALID_ARG
    assert refused.error().message() == f"{INPUT_IDS}[1, 0] = {vocabulary} is outside the vocabulary [0, {vocabulary})"
