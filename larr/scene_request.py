"""Validation of a request's scene texts, stated once for the client, the feature cache and the baseline.

The server reads ``SCENE_TEXT`` (K,) BYTES; the client holds a mapping feature -> str. Both accept
exactly the texts the embedder can read: K of them (the published scene schema), each non-blank and
valid UTF-8. Numpy only (layer 1): the torch-free client imports it too::

    texts = parse_scene_text(raw, ("weather", "place"))       # server: (K,) bytes -> K str
    text = check_scene_text(value, "scene feature 'weather'")  # client: one str, named as the caller says

Errors are :class:`SceneTextError`; each side re-raises them as its own error type (the server's
``RequestError``, the client's ``InvalidRequestError``) so that a message reaches its client unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from larr.contract import SCENE_TEXT


class SceneTextError(ValueError):
    """A scene text the embedder cannot read; the message names the offending text."""


def check_scene_text(value: object, subject: str) -> str:
    """``value`` if it is a text the embedder can read; ``subject`` names it in the error."""
    if not isinstance(value, str):
        raise SceneTextError(f"{subject} must be a str (UTF-8 text), got {type(value).__name__}")
    if not value.strip():
        raise SceneTextError(f"{subject} is empty; every scene feature needs a text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates: a str that has no UTF-8 form
        raise SceneTextError(f"{subject} is not valid Unicode: {error}") from error
    return value


def decode_scene_text(value: object, subject: str) -> str:
    """One ``SCENE_TEXT`` element -- UTF-8 bytes off the wire, or a str in-process -- as checked text."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SceneTextError(f"{subject} is not valid UTF-8: {error.reason} at byte {error.start}") from error
    return check_scene_text(value, subject)


def parse_scene_text(raw: np.ndarray | Sequence, features: Sequence[str]) -> list[str]:
    """A request's ``SCENE_TEXT`` (K,) -> its K texts, in the published feature order.

    Raises :class:`SceneTextError` when the count differs from ``features`` or a text is unreadable.
    """
    values = np.asarray(raw, dtype=object).reshape(-1)  # (K,) whatever shape the tensor came in
    if len(values) != len(features):
        names = ", ".join(features)
        raise SceneTextError(f"{SCENE_TEXT} has {len(values)} texts; the scene schema has {len(features)}: {names}")
    subjects = (f"{SCENE_TEXT}[{k}] ({feature})" for k, feature in enumerate(features))  # SCENE_TEXT[1] (place)
    return [decode_scene_text(value, subject) for value, subject in zip(values, subjects)]
