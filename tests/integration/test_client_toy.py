"""LarrClient / AsyncLarrClient / larr query against a real tritonserver serving the toy ``larr`` ensemble."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from larr.clients import (
    AsyncLarrClient,
    InvalidRequestError,
    LarrClient,
    SceneSchema,
    ScoreRequest,
    ServerError,
    ServerUnavailableError,
    cli,
)
from larr.serving.server.process import RunningServer

pytestmark = pytest.mark.integration

SCENE = {"weather": "heavy rain", "time_slot": "late night"}


def _texts(toy: Any, scene: dict[str, str]) -> list[str]:
    return [scene[feature] for feature in toy.scene_features]


def _requests(n: int) -> list[ScoreRequest]:
    scenes = [SCENE, {"weather": "小雨", "time_slot": "早上"}, {"weather": "sunny and warm", "time_slot": "noon"}]
    return [
        ScoreRequest(scene=scenes[i % 3], user_id=i, item_ids=list(range(i % 5 + 1, i % 5 + 4)))
        for i in range(n)
    ]


@pytest.fixture()
def client(toy_larr_server: RunningServer) -> Iterator[LarrClient]:
    with LarrClient(toy_larr_server.grpc_url) as larr_client:
        yield larr_client


def test_schema_comes_from_the_server(client: LarrClient, toy: Any) -> None:
    assert client.schema == SceneSchema(features=toy.scene_features, max_candidates=toy.max_candidates)


def test_score_matches_the_toy_model(client: LarrClient, toy: Any) -> None:
    ctr = client.score(SCENE, 3, [1, 2, 3])
    assert ctr.dtype == np.float32 and ctr.shape == (3,)
    np.testing.assert_allclose(ctr, toy.ctr(_texts(toy, SCENE), 3, [1, 2, 3]), rtol=1e-6)


def test_texts_arrive_as_utf8_in_the_published_order(client: LarrClient, toy: Any) -> None:
    # 2 + 2 characters but 12 UTF-8 bytes: the toy counts characters after decoding.
    scene = {"time_slot": "深夜", "weather": "暴雨"}
    ctr = client.score(scene, 0, np.array([7], dtype=np.int32))
    np.testing.assert_allclose(ctr, toy.ctr(["暴雨", "深夜"], 0, [7]), rtol=1e-6)


def test_server_side_error_surfaces_with_the_server_message(client: LarrClient, toy: Any) -> None:
    with pytest.raises(ServerError) as caught:
        client.score(SCENE, 1, [1, toy.max_item_id + 5])
    assert not isinstance(caught.value, ServerUnavailableError)
    assert caught.value.message == f"in ensemble 'larr', unknown item id {toy.max_item_id + 5}"
    assert caught.value.status == "StatusCode.INTERNAL"
    # The failed request does not poison the next one.
    np.testing.assert_allclose(client.score(SCENE, 1, [1]), toy.ctr(_texts(toy, SCENE), 1, [1]), rtol=1e-6)


def test_too_many_candidates_is_rejected_before_sending(client: LarrClient, toy: Any) -> None:
    with pytest.raises(InvalidRequestError, match=f"at most {toy.max_candidates}"):
        client.score(SCENE, 1, list(range(toy.max_candidates + 1)))
    assert client.score(SCENE, 1, list(range(toy.max_candidates))).shape == (toy.max_candidates,)


def test_unknown_model_is_a_server_error(toy_larr_server: RunningServer) -> None:
    with LarrClient(toy_larr_server.grpc_url, model_name="no_such_model") as client:
        with pytest.raises(ServerError, match="unknown model") as caught:
            client.score(SCENE, 1, [1])
    assert caught.value.status == "StatusCode.NOT_FOUND"


def test_score_many_concurrently_in_order(toy_larr_server: RunningServer, toy: Any) -> None:
    requests = _requests(40)
    with LarrClient(toy_larr_server.grpc_url, max_in_flight=8) as client:
        results = client.score_many(requests)
    assert len(results) == len(requests)
    for request, ctr in zip(requests, results):
        expected = toy.ctr(_texts(toy, dict(request.scene)), request.user_id, request.item_ids)
        np.testing.assert_allclose(ctr, expected, rtol=1e-6)


def test_score_many_with_one_bad_request(client: LarrClient, toy: Any) -> None:
    requests = _requests(6)
    requests[4] = ScoreRequest(scene=SCENE, user_id=4, item_ids=[toy.max_item_id])
    with pytest.raises(ServerError, match=f"request 4: in ensemble 'larr', unknown item id {toy.max_item_id}"):
        client.score_many(requests)
    results = client.score_many(requests, return_exceptions=True)
    assert isinstance(results[4], ServerError)
    for index in (0, 1, 2, 3, 5):
        request = requests[index]
        expected = toy.ctr(_texts(toy, dict(request.scene)), request.user_id, request.item_ids)
        np.testing.assert_allclose(results[index], expected, rtol=1e-6)


def test_async_client(toy_larr_server: RunningServer, toy: Any) -> None:
    requests = _requests(20)
    requests[7] = ScoreRequest(scene=SCENE, user_id=7, item_ids=[toy.max_item_id + 1])

    async def run() -> tuple[SceneSchema, np.ndarray, list[Any]]:
        async with AsyncLarrClient(toy_larr_server.grpc_url, max_in_flight=4) as client:
            schema = await client.get_schema()
            one = await client.score(SCENE, 5, [10, 20])
            with pytest.raises(ServerError, match="request 7: in ensemble 'larr', unknown item id"):
                await client.score_many(requests)
            many = await client.score_many(requests, return_exceptions=True)
            return schema, one, many

    schema, one, many = asyncio.run(run())
    assert schema.features == toy.scene_features
    np.testing.assert_allclose(one, toy.ctr(_texts(toy, SCENE), 5, [10, 20]), rtol=1e-6)
    assert isinstance(many[7], ServerError)
    for index, request in enumerate(requests):
        if index != 7:
            expected = toy.ctr(_texts(toy, dict(request.scene)), request.user_id, request.item_ids)
            np.testing.assert_allclose(many[index], expected, rtol=1e-6)


def test_larr_query_against_the_server(
    toy_larr_server: RunningServer, toy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cli.configure_query_parser(parser)
    args = parser.parse_args(
        ["--url", toy_larr_server.grpc_url, "--user-id", "2", "--items", "5,30,1",
         "--scene", "weather=heavy rain", "--scene", "time_slot=late night"]
    )
    assert cli.run_query(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert [int(row[1]) for row in rows] == [30, 5, 1]  # the toy CTR grows with the item id
    expected = toy.ctr(_texts(toy, SCENE), 2, [30])[0]
    assert float(rows[0][2]) == pytest.approx(expected, abs=1e-6)
