"""Validation of one ``ctr`` request (importable without Triton).

Two callers, one copy of each check: the ``ctr`` model checks everything it is sent
(:func:`validate_ctr_inputs`, since any gRPC client can call it directly), and ``feature_cache``, the
ensemble's first step, checks the ids (:func:`validate_ctr_request`) so that a bad request is refused
before anything is embedded for it and before a ctr step without checks of its own (the gpu target's
TensorRT plan) could score it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from larr.contract import PARAM_MAX_CANDIDATES, PARAM_SCENE_VOCAB_SIZES, SCENE_EMB, SCENE_IDS
from larr.serving.errors import RequestError
from larr.serving.model_config import model_parameters


@dataclass(frozen=True)
class CTRRequest:
    """One request's inputs as Triton hands them to the ctr model (a leading batch axis of 1 is allowed)."""

    scene_emb: np.ndarray  # (K', D) or (1, K', D)
    scene_ids: np.ndarray  # (K,) or (1, K)
    user_id: np.ndarray  # (1,) or (1, 1)
    item_ids: np.ndarray  # (N,) or (1, N)


@dataclass(frozen=True)
class CTRLimits:
    """What one ctr request may hold, read from the ctr model config."""

    max_candidates: int  # most candidate items per request
    scene_shape: tuple[int, int]  # (K', D) of SCENE_EMB
    scene_vocab_sizes: tuple[int, ...]  # (K,): rows of each scene feature's field table, row 0 = unseen

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> CTRLimits:
        """The config's parameters and its first input's dims (SCENE_EMB, without the batch axis)."""
        params = model_parameters(config)
        scene_dims = tuple(int(d) for d in config["input"][0]["dims"][-2:])  # JSON may write int64 dims as strings
        return cls(
            max_candidates=int(params[PARAM_MAX_CANDIDATES]),
            scene_shape=(scene_dims[0], scene_dims[1]),
            scene_vocab_sizes=tuple(int(size) for size in json.loads(params[PARAM_SCENE_VOCAB_SIZES])),
        )


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


def validate_ctr_inputs(request: CTRRequest, limits: CTRLimits) -> None:
    """Raise :class:`RequestError` unless every input of ``request`` can be scored on its own.

    Beyond :func:`validate_ctr_request`'s ids: SCENE_EMB (K', D) finite (a NaN would come back as a
    "probability"), SCENE_IDS (K,) inside each feature's table -- feature_cache never sends anything else,
    and the PyTorch runtime raises on such an id, which would fail every request batched with it.
    """
    validate_ctr_request(request.user_id, request.item_ids, limits.max_candidates)
    scene_emb = np.asarray(request.scene_emb)
    if scene_emb.shape not in (limits.scene_shape, (1, *limits.scene_shape)):
        raise RequestError(f"{SCENE_EMB} must be {limits.scene_shape}, got {scene_emb.shape}")
    if not np.isfinite(scene_emb).all():
        raise RequestError(f"{SCENE_EMB} holds NaN or infinite values")
    sizes = np.asarray(limits.scene_vocab_sizes)  # (K,)
    scene_ids = np.asarray(request.scene_ids)
    if scene_ids.shape not in (sizes.shape, (1, *sizes.shape)):
        raise RequestError(f"{SCENE_IDS} must hold one id per scene feature, {sizes.shape}, got {scene_ids.shape}")
    scene_ids = scene_ids.reshape(-1)
    outside = np.flatnonzero((scene_ids < 0) | (scene_ids >= sizes))
    if outside.size:
        k = int(outside[0])
        raise RequestError(f"{SCENE_IDS}[{k}] = {int(scene_ids[k])} is outside scene feature {k}'s ids [0, {sizes[k]})")


__all__ = ["CTRLimits", "CTRRequest", "validate_ctr_inputs", "validate_ctr_request"]
