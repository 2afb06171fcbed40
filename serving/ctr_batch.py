"""Scoring a dynamic batch of ``ctr`` requests in one graph run (importable and tested without Triton).

Each request carries its scene (K', D), its scene ids (K,), one user and its own number of candidates.
The batched graph (``larr.models.ctr_model.BatchedServingCTR``) takes them concatenated::

    requests   b = 0: N_0 items, b = 1: N_1 items, ...           (invalid requests are answered alone)
    graph      SCENE_EMB (B, K', D), SCENE_IDS (B, K), USER_ID (B, 1),
               ITEM_IDS (T,), ITEM_REQUEST (T,) = [0]*N_0 + [1]*N_1 + ...   ->   CTR (T,)
    responses  CTR split back into (N_0,), (N_1,), ...

so the aggregation encoder runs once per request and the CTR head once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from larr.serving.ctr_request import CTRLimits, CTRRequest, validate_ctr_inputs
from larr.serving.errors import RequestError


def score_batch(
    run: Callable[[Sequence[np.ndarray]], np.ndarray],
    requests: Sequence[CTRRequest],
    limits: CTRLimits,
) -> list[np.ndarray | RequestError]:
    """Per request: its CTR (N,) float32, or the :class:`RequestError` to answer it with.

    ``run`` takes the batched graph's inputs ``(SCENE_EMB, SCENE_IDS, USER_ID, ITEM_IDS, ITEM_REQUEST)``
    and returns CTR (T,). Each request is checked on its own first (:func:`validate_ctr_inputs`): an invalid
    one is answered with its error and left out of the run, so it cannot fail the others.
    """
    results: list[np.ndarray | RequestError | None] = [None] * len(requests)
    valid: list[int] = []
    for index, request in enumerate(requests):
        try:
            validate_ctr_inputs(request, limits)
        except RequestError as error:
            results[index] = error
            continue
        valid.append(index)
    if valid:
        items = [np.asarray(requests[i].item_ids, dtype=np.int64).reshape(-1) for i in valid]
        counts = [len(x) for x in items]
        first = requests[valid[0]]
        scene_shape = np.shape(first.scene_emb)[-2:]  # (K', D)
        inputs = (
            np.stack([np.asarray(requests[i].scene_emb, dtype=np.float32).reshape(scene_shape) for i in valid]),  # (B, K', D)
            np.stack([np.asarray(requests[i].scene_ids, dtype=np.int64).reshape(-1) for i in valid]),  # (B, K)
            np.stack([np.asarray(requests[i].user_id, dtype=np.int64).reshape(1) for i in valid]),  # (B, 1)
            np.concatenate(items),  # (T,)
            np.repeat(np.arange(len(valid), dtype=np.int64), counts),  # (T,)
        )
        ctr = np.asarray(run(inputs), dtype=np.float32).reshape(-1)  # (T,)
        if ctr.shape != (sum(counts),):
            raise RuntimeError(f"the ctr graph returned {ctr.shape} scores for {sum(counts)} candidates")
        for index, scores in zip(valid, np.split(ctr, np.cumsum(counts)[:-1])):
            results[index] = scores
    return results  # type: ignore[return-value]  # every slot is filled above
