"""Unit tests of larr.clients: validation, encoding, error mapping, concurrency (no server: the network
calls are replaced by fakes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from larr.clients import (
    AsyncLarrClient,
    InvalidRequestError,
    LarrClient,
    LarrError,
    RejectedRequestError,
    SceneSchema,
    ScoreRequest,
    ServerError,
    ServerUnavailableError,
    cli,
    encode_request,
)
from larr.clients import client as client_module
from larr.clients.client import tls_arguments
from larr.contract import CTR, ITEM_IDS, PARAM_MAX_CANDIDATES, PARAM_SCENE_FEATURES, SCENE_TEXT, USER_ID
from larr.serving.server.ports import free_port

SCHEMA = SceneSchema(features=("weather", "time_slot"), max_candidates=4)
SCENE = {"time_slot": "late night", "weather": "heavy rain"}  # deliberately not in schema order


def _fake_ctr(inputs: list[Any]) -> np.ndarray:
    """What the fakes 'compute': user_id + item_id / 1000, so results identify their request."""
    by_name = {tensor.name(): tensor for tensor in inputs}
    user = _input_array(by_name[USER_ID])[0]
    items = _input_array(by_name[ITEM_IDS])
    return (user + items / 1000).astype(np.float32)


def _input_array(tensor: Any) -> np.ndarray:
    # InferInput keeps only the serialised bytes (raw little-endian for INT64); no public getter.
    return np.frombuffer(tensor._get_content(), dtype=np.int64)


class _Result:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self._outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)


class FakeGrpc:
    """Stands in for tritonclient.grpc.InferenceServerClient."""

    def __init__(self, error: InferenceServerException | None = None, ctr: Callable[[list[Any]], Any] = _fake_ctr):
        self.error = error
        self.ctr = ctr
        self.config_calls = 0
        self.sent: list[list[Any]] = []
        self.pending: list[Callable[[], None]] = []
        self.closed = False

    def get_model_config(self, model_name: str, headers: Any = None, client_timeout: Any = None) -> Any:
        self.config_calls += 1
        from tritonclient.grpc import model_config_pb2, service_pb2

        config = model_config_pb2.ModelConfig(name=model_name)
        config.parameters[PARAM_SCENE_FEATURES].string_value = json.dumps(list(SCHEMA.features))
        config.parameters[PARAM_MAX_CANDIDATES].string_value = str(SCHEMA.max_candidates)
        return service_pb2.ModelConfigResponse(config=config)

    def _answer(self, inputs: list[Any]) -> _Result:
        if self.error is not None:
            raise self.error
        return _Result({CTR: self.ctr(inputs)})

    def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> _Result:
        self.sent.append(inputs)
        return self._answer(inputs)

    def async_infer(self, model_name: str, inputs: list[Any], callback: Callable[..., None], **kwargs: Any) -> None:
        # Answers are held back until release(), like requests in flight on the network.
        self.sent.append(inputs)

        def finish() -> None:
            try:
                callback(self._answer(inputs), None)
            except InferenceServerException as error:
                callback(None, error)

        self.pending.append(finish)

    def close(self) -> None:
        self.closed = True


class FakeAioGrpc(FakeGrpc):
    """Stands in for tritonclient.grpc.aio.InferenceServerClient."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_flight = 0
        self.max_seen_in_flight = 0

    async def get_model_config(self, model_name: str, headers: Any = None, client_timeout: Any = None) -> Any:
        return FakeGrpc.get_model_config(self, model_name, headers, client_timeout)

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> _Result:
        self.sent.append(inputs)
        self.in_flight += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
        await asyncio.sleep(0)  # let the other requests start
        self.in_flight -= 1
        return self._answer(inputs)

    async def close(self) -> None:
        self.closed = True


def _client(fake: FakeGrpc, **kwargs: Any) -> LarrClient:
    client = LarrClient("127.0.0.1:1", **kwargs)
    client._grpc = fake
    return client


# ------------------------------------------------------------------------------------------------
# Schema


def test_schema_from_parameters() -> None:
    schema = SceneSchema.from_parameters({PARAM_SCENE_FEATURES: '["a", "b"]', PARAM_MAX_CANDIDATES: "7"})
    assert schema == SceneSchema(features=("a", "b"), max_candidates=7)


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({PARAM_MAX_CANDIDATES: "7"}, PARAM_SCENE_FEATURES),
        ({PARAM_SCENE_FEATURES: '["a"]'}, PARAM_MAX_CANDIDATES),
        ({PARAM_SCENE_FEATURES: "not json", PARAM_MAX_CANDIDATES: "7"}, "invalid"),
        ({PARAM_SCENE_FEATURES: '{"a": 1}', PARAM_MAX_CANDIDATES: "7"}, "JSON list"),
        ({PARAM_SCENE_FEATURES: '["a", "a"]', PARAM_MAX_CANDIDATES: "7"}, "unique"),
        ({PARAM_SCENE_FEATURES: "[]", PARAM_MAX_CANDIDATES: "7"}, "non-empty"),
        ({PARAM_SCENE_FEATURES: '["a", 3]', PARAM_MAX_CANDIDATES: "7"}, "non-empty strings"),
        ({PARAM_SCENE_FEATURES: '"ab"', PARAM_MAX_CANDIDATES: "7"}, "JSON list"),
        ({PARAM_SCENE_FEATURES: '["a"]', PARAM_MAX_CANDIDATES: "0"}, "positive"),
        ({PARAM_SCENE_FEATURES: '["a"]', PARAM_MAX_CANDIDATES: "many"}, "invalid"),
    ],
)
def test_schema_from_bad_parameters_is_a_server_error(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(ServerError, match=message):
        SceneSchema.from_parameters(parameters, "larr")


def test_schema_rejects_a_bare_string() -> None:
    with pytest.raises(ValueError, match="not the string"):
        SceneSchema(features="weather", max_candidates=1)  # type: ignore[arg-type]


def test_schema_is_fetched_lazily_once() -> None:
    fake = FakeGrpc()
    client = _client(fake)
    assert fake.config_calls == 0
    assert client.schema == SCHEMA
    client.score(SCENE, 1, [1])
    client.score(SCENE, 1, [2])
    assert fake.config_calls == 1


def test_injected_schema_skips_the_lookup() -> None:
    fake = FakeGrpc()
    client = _client(fake, schema=SceneSchema(features=("only",), max_candidates=1))
    client.score({"only": "x"}, 1, [1])
    assert fake.config_calls == 0


# ------------------------------------------------------------------------------------------------
# Encoding and validation


def test_encode_request_orders_texts_by_the_published_schema() -> None:
    encoded = encode_request(SCHEMA, {"time_slot": "深夜", "weather": "heavy rain"}, np.int32(3), [5, np.int64(6)])
    assert encoded.scene_text.tolist() == ["heavy rain".encode(), "深夜".encode("utf-8")]
    assert encoded.user_id.dtype == np.int64 and encoded.user_id.tolist() == [3]
    assert encoded.item_ids.dtype == np.int64 and encoded.item_ids.tolist() == [5, 6]
    names = [tensor.name() for tensor in encoded.infer_inputs()]
    datatypes = [tensor.datatype() for tensor in encoded.infer_inputs()]
    shapes = [tensor.shape() for tensor in encoded.infer_inputs()]
    assert names == [SCENE_TEXT, USER_ID, ITEM_IDS]
    assert datatypes == ["BYTES", "INT64", "INT64"]
    assert shapes == [[2], [1], [2]]


def test_encode_request_accepts_integer_arrays() -> None:
    encoded = encode_request(SCHEMA, SCENE, 0, np.array([1, 2, 3], dtype=np.uint16))
    assert encoded.item_ids.dtype == np.int64 and encoded.item_ids.tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "scene, message",
    [
        ({"weather": "rain"}, "missing 'time_slot'"),
        ({**SCENE, "mood": "happy"}, "unknown 'mood'"),
        ({"weather": "rain", "slot": "x"}, "missing 'time_slot'; unknown 'slot'"),
        ({"weather": "rain", "time_slot": 3}, "'time_slot' must be a str"),
        ({"weather": "rain", "time_slot": b"night"}, "'time_slot' must be a str"),
        ({"weather": "", "time_slot": "night"}, "'weather' is empty"),
        ({"weather": "  ", "time_slot": "night"}, "'weather' is empty"),
        ({"weather": "\ud800", "time_slot": "night"}, "not valid Unicode"),
        ([("weather", "rain")], "must be a mapping"),
    ],
)
def test_bad_scenes_are_rejected_with_the_feature_named(scene: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(")):
        encode_request(SCHEMA, scene, 1, [1])


@pytest.mark.parametrize(
    "user_id, message",
    [(True, "integer"), (np.bool_(True), "integer"), (1.0, "integer"), ("3", "integer"), (None, "integer"),
     (-1, ">= 0|0\\.\\."), (2**63, "0\\.\\.")],
)
def test_bad_user_ids_are_rejected(user_id: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=f"user_id.*({message})"):
        encode_request(SCHEMA, SCENE, user_id, [1])


@pytest.mark.parametrize(
    "item_ids, message",
    [
        ([], "must not be empty"),
        ([1, 2, 3, 4, 5], "at most 4"),
        ([1, True], r"item_ids\[1\] must be an integer"),
        ([1, 2.0], r"item_ids\[1\] must be an integer"),
        ([1, -2], r"item_ids\[1\] must be in"),
        ("123", "sequence of integers"),
        (5, "sequence of integers"),
        ({1, 2}, "sequence of integers"),
        (np.array([1.0, 2.0]), "1-D integer array"),
        (np.array([True]), "1-D integer array"),
        (np.array([[1, 2]]), "1-D integer array"),
        (np.array([1, -1]), "must be in"),
        (np.array([2**64 - 1], dtype=np.uint64), "must be in"),
        (np.array([], dtype=np.int64), "must not be empty"),
    ],
)
def test_bad_item_ids_are_rejected(item_ids: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        encode_request(SCHEMA, SCENE, 1, item_ids)


def test_invalid_request_is_a_value_error_and_nothing_is_sent() -> None:
    fake = FakeGrpc()
    client = _client(fake, schema=SCHEMA)
    with pytest.raises(ValueError):
        client.score(SCENE, -1, [1])
    assert fake.sent == []


# ------------------------------------------------------------------------------------------------
# Scores and error mapping (sync)


def test_score_returns_float32_scores_in_item_order() -> None:
    client = _client(FakeGrpc(), schema=SCHEMA)
    ctr = client.score(SCENE, 2, [30, 10, 20])
    assert ctr.dtype == np.float32 and ctr.shape == (3,)
    np.testing.assert_allclose(ctr, [2.03, 2.01, 2.02], rtol=1e-6)


@pytest.mark.parametrize(
    "status, error_type",
    [
        ("StatusCode.INTERNAL", ServerError),
        ("StatusCode.INVALID_ARGUMENT", RejectedRequestError),
        ("StatusCode.NOT_FOUND", ServerError),
        ("StatusCode.UNAVAILABLE", ServerUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", ServerUnavailableError),
    ],
)
def test_server_errors_are_wrapped_with_the_server_message(status: str, error_type: type) -> None:
    fake = FakeGrpc(error=InferenceServerException("in ensemble 'larr', unknown item id 9", status=status))
    client = _client(fake, schema=SCHEMA)
    with pytest.raises(error_type) as caught:
        client.score(SCENE, 1, [9])
    assert type(caught.value) is error_type
    assert caught.value.message == "in ensemble 'larr', unknown item id 9"
    assert caught.value.status == status
    assert isinstance(caught.value, LarrError) and isinstance(caught.value, ServerError)
    # only a rejected request is the caller's mistake (a ValueError); server faults are not
    assert isinstance(caught.value, ValueError) == (status == "StatusCode.INVALID_ARGUMENT")


def test_schema_lookup_errors_are_wrapped() -> None:
    fake = FakeGrpc()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise InferenceServerException("Request for unknown model: 'larr' is not found", status="StatusCode.NOT_FOUND")

    fake.get_model_config = refuse  # type: ignore[method-assign]
    with pytest.raises(ServerError, match="unknown model") as caught:
        _client(fake).score(SCENE, 1, [1])
    assert caught.value.status == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize(
    "ctr, message",
    [(lambda inputs: None, "no CTR output"), (lambda inputs: np.zeros(5, np.float32), "shape")],
)
def test_answers_that_break_the_contract_are_server_errors(ctr: Callable[[list[Any]], Any], message: str) -> None:
    client = _client(FakeGrpc(ctr=ctr), schema=SCHEMA)
    with pytest.raises(ServerError, match=message):
        client.score(SCENE, 1, [1, 2])


def test_unreachable_server_is_server_unavailable() -> None:
    with LarrClient(f"127.0.0.1:{free_port()}", timeout_s=10) as client:
        with pytest.raises(ServerUnavailableError) as caught:
            client.score(SCENE, 1, [1])
    # Nothing listens: no hint about TLS (tests/integration/test_tls.py has the plaintext-vs-TLS case).
    assert "ssl=True" not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# TLS arguments


def _pem(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text("-----BEGIN PLACEHOLDER-----\n", encoding="utf-8")
    return path


def test_tls_arguments_pass_the_files_to_tritonclient(tmp_path: Path) -> None:
    ca, key, cert = _pem(tmp_path, "ca.pem"), _pem(tmp_path, "client.key"), _pem(tmp_path, "client.pem")
    assert tls_arguments(False) == {}
    assert tls_arguments(True) == {"ssl": True}  # the system's root certificates
    assert tls_arguments(True, ca, key, cert) == {
        "ssl": True, "root_certificates": str(ca), "private_key": str(key), "certificate_chain": str(cert)
    }


def test_tls_files_without_ssl_are_an_error_not_a_plaintext_connection(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root_certificates given without ssl=True"):
        tls_arguments(False, root_certificates=_pem(tmp_path, "ca.pem"))


def test_tls_client_key_and_certificate_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="private_key and certificate_chain go together"):
        tls_arguments(True, private_key=_pem(tmp_path, "client.key"))


def test_tls_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root_certificates file .*nope\.pem does not exist"):
        tls_arguments(True, root_certificates=tmp_path / "nope.pem")


class _RecordingChannel:
    """Stands in for tritonclient's InferenceServerClient: records how it was made."""

    made: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, url: str, **kwargs: Any) -> None:
        _RecordingChannel.made.append((url, kwargs))

    def close(self) -> None:
        pass


def test_clients_hand_the_tls_arguments_to_tritonclient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = _pem(tmp_path, "ca.pem")
    monkeypatch.setattr(client_module.grpcclient, "InferenceServerClient", _RecordingChannel)
    monkeypatch.setattr(client_module.grpcclient_aio, "InferenceServerClient", _RecordingChannel)
    _RecordingChannel.made = []
    LarrClient("h:1", ssl=True, root_certificates=ca).close()
    AsyncLarrClient("h:2", ssl=True, root_certificates=ca)._client()
    LarrClient("h:3").close()
    expected = {"ssl": True, "root_certificates": str(ca)}
    assert _RecordingChannel.made == [("h:1", expected), ("h:2", expected), ("h:3", {})]


# ------------------------------------------------------------------------------------------------
# score_many (sync)


def _requests(n: int) -> list[ScoreRequest]:
    return [ScoreRequest(scene=SCENE, user_id=user, item_ids=[user % 3 + 1, 9]) for user in range(n)]


def _release_in_reverse(fake: FakeGrpc) -> None:
    pending, fake.pending = fake.pending, []
    for finish in reversed(pending):
        finish()


def test_score_many_sends_all_before_any_answer_and_keeps_request_order() -> None:
    fake = FakeGrpc()
    client = _client(fake, schema=SCHEMA)
    requests = _requests(6)
    original = fake.async_infer
    most_in_flight = 0

    # Answers come only once every request is out, and in reverse order. A client that waited for an
    # answer before sending the next request would stall; the timer then unblocks it (a hang guard,
    # not a time limit) so the in-flight count below fails the test instead.
    guard = threading.Timer(30, lambda: _release_in_reverse(fake))
    guard.daemon = True

    def send_then_answer_all(*args: Any, **kwargs: Any) -> None:
        nonlocal most_in_flight
        original(*args, **kwargs)
        most_in_flight = len(fake.pending)
        if len(fake.pending) == len(requests):
            guard.cancel()
            _release_in_reverse(fake)
        elif len(fake.pending) == 1:
            guard.start()

    fake.async_infer = send_then_answer_all  # type: ignore[method-assign]
    results = client.score_many(requests)
    assert most_in_flight == len(requests)
    assert len(results) == 6
    for request, ctr in zip(requests, results):
        np.testing.assert_allclose(ctr, [request.user_id + i / 1000 for i in request.item_ids], rtol=1e-6)


def test_score_many_respects_max_in_flight() -> None:
    fake = FakeGrpc()
    client = _client(fake, schema=SCHEMA, max_in_flight=1)
    original = fake.async_infer

    def answer_at_once(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        fake.pending.pop()()  # with one slot, the next send must wait for this answer

    fake.async_infer = answer_at_once  # type: ignore[method-assign]
    assert len(client.score_many(_requests(3))) == 3


def test_score_many_validates_everything_before_sending() -> None:
    fake = FakeGrpc()
    client = _client(fake, schema=SCHEMA)
    requests = _requests(4)
    requests[2] = ScoreRequest(scene={"weather": "rain"}, user_id=1, item_ids=[1])
    with pytest.raises(InvalidRequestError, match="request 2: .*missing 'time_slot'"):
        client.score_many(requests)
    assert fake.sent == []


def test_score_many_reports_which_request_failed() -> None:
    def fail_for_user_1(inputs: list[Any]) -> np.ndarray:
        if _input_array({t.name(): t for t in inputs}[USER_ID])[0] == 1:
            raise InferenceServerException("in ensemble 'larr', boom", status="StatusCode.INTERNAL")
        return _fake_ctr(inputs)

    fake = FakeGrpc(ctr=fail_for_user_1)
    client = _client(fake, schema=SCHEMA)
    original = fake.async_infer

    def answer_at_once(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        fake.pending.pop()()

    fake.async_infer = answer_at_once  # type: ignore[method-assign]
    with pytest.raises(ServerError, match="request 1: in ensemble 'larr', boom"):
        client.score_many(_requests(3))
    results = client.score_many(_requests(3), return_exceptions=True)
    assert isinstance(results[1], ServerError) and results[1].message == "in ensemble 'larr', boom"
    assert isinstance(results[0], np.ndarray) and isinstance(results[2], np.ndarray)


def test_score_many_of_nothing_is_empty() -> None:
    assert _client(FakeGrpc(), schema=SCHEMA).score_many([]) == []


def test_context_manager_closes_the_channel() -> None:
    fake = FakeGrpc()
    with _client(fake, schema=SCHEMA):
        pass
    assert fake.closed


def test_score_request_is_frozen() -> None:
    request = ScoreRequest(scene=SCENE, user_id=1, item_ids=(1,))
    with pytest.raises(AttributeError):
        request.user_id = 2  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# Async client


def _async_client(fake: FakeAioGrpc, **kwargs: Any) -> AsyncLarrClient:
    client = AsyncLarrClient("127.0.0.1:1", **kwargs)
    client._grpc = fake  # type: ignore[assignment]
    return client


def test_async_score_and_score_many() -> None:
    fake = FakeAioGrpc()

    async def run() -> tuple[np.ndarray, list[Any]]:
        async with _async_client(fake, max_in_flight=3) as client:
            return await client.score(SCENE, 2, [10]), await client.score_many(_requests(8))

    one, many = asyncio.run(run())
    np.testing.assert_allclose(one, [2.01], rtol=1e-6)
    assert [float(ctr[0]) for ctr in many] == pytest.approx([u + (u % 3 + 1) / 1000 for u in range(8)], rel=1e-6)
    assert fake.max_seen_in_flight == 3  # concurrent, and bounded
    assert fake.closed and fake.config_calls == 1


def test_async_errors_are_mapped_like_sync_ones() -> None:
    fake = FakeAioGrpc(error=InferenceServerException("gone", status="StatusCode.UNAVAILABLE"))

    async def run() -> None:
        client = _async_client(fake, schema=SCHEMA)
        with pytest.raises(ServerUnavailableError, match="gone"):
            await client.score(SCENE, 1, [1])
        with pytest.raises(ServerUnavailableError, match="request 0: gone"):
            await client.score_many(_requests(2))
        with pytest.raises(InvalidRequestError, match="request 1"):
            await client.score_many([_requests(1)[0], ScoreRequest(SCENE, -5, [1])])
        results = await client.score_many(_requests(2), return_exceptions=True)
        assert all(isinstance(r, ServerUnavailableError) for r in results)

    asyncio.run(run())


# ------------------------------------------------------------------------------------------------
# Import without torch


def test_client_imports_without_torch() -> None:
    code = textwrap.dedent(
        """
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        try:
            import torch
            print("torch-not-blocked")
        except ImportError:
            print("torch-blocked")
        import larr.clients
        import larr.clients.cli
        print("imported", sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers"}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["torch-blocked", "imported []"]


# ------------------------------------------------------------------------------------------------
# larr query


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="larr query")
    cli.configure_query_parser(parser)
    return parser.parse_args(argv)


def test_query_parser() -> None:
    args = _parse(["--user-id", "3", "--items", "1, 2,3", "--scene", "weather=heavy rain", "--scene", "q=a=b"])
    assert args.items == [1, 2, 3]
    assert args.scene == [("weather", "heavy rain"), ("q", "a=b")]
    assert args.url == "127.0.0.1:8001" and args.top is None and not args.json


@pytest.mark.parametrize(
    "argv", [["--items", "1,x"], ["--items", "1", "--scene", "noequals"], ["--items", "1", "--top", "0"]]
)
def test_query_parser_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["--user-id", "1", *argv])


class _FakeLarrClient:
    error: LarrError | None = None
    made_with: dict[str, Any] = {}

    def __init__(self, url: str, model_name: str, timeout_s: float, **tls: Any) -> None:
        self.url = url
        _FakeLarrClient.made_with = {"url": url, **tls}

    def __enter__(self) -> _FakeLarrClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def score(self, scene: dict[str, str], user_id: int, item_ids: list[int]) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return np.array([0.1, 0.9, 0.5, 0.9], dtype=np.float32)[: len(item_ids)]


def test_run_query_prints_items_best_first(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "LarrClient", _FakeLarrClient)
    args = _parse(["--user-id", "3", "--items", "11,22,33,44", "--scene", "weather=rain", "--top", "3"])
    assert cli.run_query(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert [row[1] for row in rows] == ["22", "44", "33"]  # ties keep the given order


def test_run_query_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "LarrClient", _FakeLarrClient)
    assert cli.run_query(_parse(["--user-id", "3", "--items", "11,22", "--scene", "weather=rain", "--json"])) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["scene"] == {"weather": "rain"}
    assert [entry["item_id"] for entry in output["items"]] == [22, 11]
    assert output["items"][0]["ctr"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "error, argv, code, expected",
    [
        (InvalidRequestError("scene features do not match"), [], 2, "invalid request: scene features do not match"),
        (ServerError("in ensemble 'larr', boom", "StatusCode.INTERNAL"), [], 1, "server error: [StatusCode.INTERNAL]"),
        (None, ["--scene", "weather=snow"], 2, "'weather' given twice"),
    ],
)
def test_run_query_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: LarrError | None,
    argv: list[str],
    code: int,
    expected: str,
) -> None:
    monkeypatch.setattr(cli, "LarrClient", type("Failing", (_FakeLarrClient,), {"error": error}))
    assert cli.run_query(_parse(["--user-id", "3", "--items", "1", "--scene", "weather=rain", *argv])) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("larr query: ") and expected in captured.err


def test_run_query_any_tls_flag_turns_tls_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli, "LarrClient", _FakeLarrClient)
    base = ["--user-id", "3", "--items", "1", "--scene", "weather=rain"]
    assert cli.run_query(_parse([*base, "--tls-ca", str(tmp_path / "ca.pem")])) == 0
    assert _FakeLarrClient.made_with["ssl"] is True
    assert _FakeLarrClient.made_with["root_certificates"] == tmp_path / "ca.pem"
    assert cli.run_query(_parse(base)) == 0
    assert _FakeLarrClient.made_with["ssl"] is False


def test_run_query_tls_cert_needs_its_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--user-id", "3", "--items", "1", "--tls-cert", str(tmp_path / "c.pem")]
    assert cli.run_query(_parse(argv)) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_run_query_reports_a_missing_tls_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.run_query(_parse(["--user-id", "3", "--items", "1", "--tls-ca", str(tmp_path / "ca.pem")])) == 2
    assert "does not exist" in capsys.readouterr().err


def test_score_many_never_hangs_on_an_unexpected_error_in_the_answer() -> None:
    """Whatever goes wrong while reading an answer ends up in that request's outcome, not in a future left unset."""

    class Unreadable:
        def as_numpy(self, name: str) -> np.ndarray:
            raise MemoryError("cannot read the response")

    fake = FakeGrpc()
    client = _client(fake, schema=SCHEMA)

    def answer_unreadably(model_name: str, inputs: list[Any], callback: Callable[..., None], **kwargs: Any) -> None:
        callback(Unreadable(), None)  # on the caller's thread: a hang would block the test itself

    fake.async_infer = answer_unreadably  # type: ignore[method-assign]
    outcomes = client.score_many(_requests(2), return_exceptions=True)
    assert [type(o) for o in outcomes] == [MemoryError, MemoryError]


def test_larr_query_prints_item_names_from_the_repository(tmp_path, monkeypatch, capsys):
    """With --model-repository, the names `larr export` wrote (larr.contract.ITEM_NAMES_PATH) stand next to the ids;
    an id the catalogue lacks gets none."""
    import argparse
    import json

    import larr.clients.cli as query_cli
    from larr.contract import ITEM_NAMES_PATH

    class FakeClient:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def score(self, scene, user_id, items):
            return np.array([0.1, 0.9, 0.5], dtype=np.float32)

    names = tmp_path / ITEM_NAMES_PATH
    names.parent.mkdir(parents=True)
    names.write_text(json.dumps(["Golden Noodle House", "Happy Pizza", "Jade Bubble Tea"]))
    monkeypatch.setattr(query_cli, "LarrClient", FakeClient)
    parser = argparse.ArgumentParser()
    query_cli.configure_query_parser(parser)
    argv = ["--user-id", "7", "--items", "0,2,5", "--scene", "weather=rain", "--model-repository", str(tmp_path)]
    assert query_cli.run_query(parser.parse_args(argv)) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert [row.split(None, 3)[1:] for row in rows] == [["2", "0.900000", "Jade Bubble Tea"], ["5", "0.500000"],
                                                        ["0", "0.100000", "Golden Noodle House"]]
    assert query_cli.run_query(parser.parse_args([*argv, "--json"])) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert [item.get("name") for item in items] == ["Jade Bubble Tea", None, "Golden Noodle House"]


def test_too_many_candidates_says_how_to_raise_the_limit():
    schema = SceneSchema(features=("weather",), max_candidates=3, batched=True)
    with pytest.raises(InvalidRequestError, match=r"at most 3 .*re-export with `larr export --max-candidates N`"):
        encode_request(schema, {"weather": "rain"}, 1, [1, 2, 3, 4])
