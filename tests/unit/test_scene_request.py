"""One validation of scene texts: the client refuses exactly what the server would refuse."""

from __future__ import annotations

import numpy as np
import pytest

from larr.clients.client import SceneSchema, encode_request
from larr.clients.errors import InvalidRequestError
from larr.scene_request import SceneTextError, parse_scene_text

FEATURES = ("weather", "place")


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\ud800", 3])
def test_client_and_server_refuse_the_same_texts(text):
    with pytest.raises(SceneTextError, match=r"SCENE_TEXT\[1\] \(place\)"):
        parse_scene_text(np.array(["rain", text], dtype=object), FEATURES)
    with pytest.raises(InvalidRequestError, match="scene feature 'place'"):
        encode_request(SceneSchema(FEATURES, 5), {"weather": "rain", "place": text}, 1, [1])


def test_what_the_client_sends_the_server_reads_back():
    scene = {"weather": "heavy rain ☔", "place": "  office "}
    sent = encode_request(SceneSchema(FEATURES, 5), scene, 1, [1]).scene_text  # (K,) UTF-8 bytes
    assert parse_scene_text(sent, FEATURES) == [scene[f] for f in FEATURES]


def test_wrong_count_and_bad_utf8_name_the_schema_and_the_byte():
    with pytest.raises(SceneTextError, match="SCENE_TEXT has 1 texts; the scene schema has 2: weather, place"):
        parse_scene_text([b"rain"], FEATURES)
    with pytest.raises(SceneTextError, match=r"SCENE_TEXT\[0\] \(weather\) is not valid UTF-8: invalid start byte at byte 0"):
        parse_scene_text([b"\xff", b"office"], FEATURES)
