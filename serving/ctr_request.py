"""Validation of one ``ctr`` request (importable without Triton)."""

from __future__ import annotations

import numpy as np

from larr.serving.errors import RequestError


def validate_ctr_request(user_id: np.ndarray, item_ids: np.ndarray, max_candidates: int) -> None:
    """Raise :class:`RequestError` for ids the model must not score.

    Unknown ids (never seen in training, or beyond the id range) are *not* errors: they are scored with
    the out-of-vocabulary rows (cold-start users and items). Negative ids are never valid.
    """
    user = np.asarray(user_id).reshape(-1)
    items = np.asarray(item_ids).reshape(-1)
    if user.size != 1:
        raise RequestError(f"USER_ID must hold exactly one id, got {user.size}")
    if int(user[0]) < 0:
        raise RequestError(f"USER_ID must be >= 0, got {int(user[0])}")
    if items.size == 0:
        raise RequestError("ITEM_IDS is empty: send at least one candidate item")
    if items.size > max_candidates:
        raise RequestError(
            f"ITEM_IDS has {items.size} candidates; this server scores at most {max_candidates} per request "
            f"(max_candidates): split the request, or re-export with `larr export --max-candidates N`"
        )
    negative = np.flatnonzero(items < 0)
    if negative.size:
        first = int(negative[0])
        raise RequestError(f"ITEM_IDS[{first}] = {int(items[first])}: ids must be >= 0")
