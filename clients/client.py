"""gRPC client of the ``larr`` ensemble (needs numpy and tritonclient[grpc], not torch).

    from larr.clients import LarrClient

    with LarrClient("127.0.0.1:8001") as client:
        ctr = client.score({"weather": "heavy rain", "time_slot": "late night"}, user_id=3, item_ids=[1, 2, 3])

A server started with ``larr serve --tls-cert ... --tls-key ... [--tls-ca ...]`` is reached with
``LarrClient(url, ssl=True, root_certificates="ca.pem")``, plus ``private_key=``/``certificate_chain=`` (the
client's key and certificate) when it asks for client certificates.

The scene is a mapping from feature name to text; the client sends the texts in the order the server
publishes (model-config parameter ``scene_features``) and checks every request before sending it, so
a wrong request fails here with :class:`InvalidRequestError` instead of deep inside the ensemble.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from larr.clients.errors import UNAVAILABLE_STATUS, InvalidRequestError, ServerError, server_error
from larr.contract import CTR, ENSEMBLE_NAME, ITEM_IDS, PARAM_MAX_CANDIDATES, PARAM_SCENE_FEATURES, SCENE_TEXT, USER_ID
from larr.scene_request import SceneTextError, check_scene_text

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 30.0
# Bound on concurrent requests of one score_many call: enough to keep a server busy, small enough not
# to queue thousands of requests behind each other (each would wait out its own deadline).
DEFAULT_MAX_IN_FLIGHT = 64
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class SceneSchema:
    """What the server publishes about its inputs: scene feature names (in order) and the candidate limit."""

    features: tuple[str, ...]
    max_candidates: int
    batched: bool = False  # the ensemble's max_batch_size > 0: every input and output has a batch axis of 1

    def __post_init__(self) -> None:
        if isinstance(self.features, str):  # a str is a sequence of one-letter "features"
            raise ValueError(f"features must be a sequence of names, not the string {self.features!r}")
        if not self.features or not all(isinstance(f, str) and f for f in self.features):
            raise ValueError(f"features must be a non-empty sequence of non-empty strings, got {self.features!r}")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be unique, got {self.features!r}")
        if isinstance(self.max_candidates, bool) or not isinstance(self.max_candidates, int) or self.max_candidates < 1:
            raise ValueError(f"max_candidates must be a positive integer, got {self.max_candidates!r}")
        object.__setattr__(self, "features", tuple(self.features))

    @classmethod
    def from_parameters(
        cls, parameters: Mapping[str, str], model_name: str = ENSEMBLE_NAME, batched: bool = False
    ) -> SceneSchema:
        """Parse the model-config ``parameters`` (string values) of ``model_name``.

        Raises :class:`ServerError` when they are missing or malformed: that is the server breaking
        the contract, not the caller's fault.
        """
        missing = [p for p in (PARAM_SCENE_FEATURES, PARAM_MAX_CANDIDATES) if p not in parameters]
        if missing:
            raise ServerError(f"model '{model_name}' publishes no model-config parameter {', '.join(missing)}")
        try:
            features = json.loads(parameters[PARAM_SCENE_FEATURES])
            if not isinstance(features, list):
                raise ValueError(f"expected a JSON list, got {type(features).__name__}")
            return cls(features=tuple(features), max_candidates=int(parameters[PARAM_MAX_CANDIDATES]), batched=batched)
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            raise ServerError(f"model '{model_name}' publishes invalid scene parameters: {error}") from error


@dataclass(frozen=True)
class ScoreRequest:
    """One scoring request: the scene (feature name -> text), the user and the candidate items."""

    scene: Mapping[str, str]
    user_id: int
    item_ids: Sequence[int]


@dataclass(frozen=True)
class EncodedRequest:
    """A validated request as the ensemble's input arrays."""

    scene_text: np.ndarray  # object [K]: UTF-8 bytes in the published feature order
    user_id: np.ndarray  # int64 [1]
    item_ids: np.ndarray  # int64 [N]

    def infer_inputs(self, batched: bool = False) -> list[grpcclient.InferInput]:
        """The three ``InferInput`` s (shared by the sync and asyncio tritonclient); ``batched`` adds the batch
        axis of 1 a batching ensemble expects (``[1, K]``, ``[1, 1]``, ``[1, N]``)."""
        inputs = []
        for name, array, datatype in (
            (SCENE_TEXT, self.scene_text, "BYTES"),
            (USER_ID, self.user_id, "INT64"),
            (ITEM_IDS, self.item_ids, "INT64"),
        ):
            if batched:
                array = array[None]
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs


def _check_id(value: Any, what: str) -> int:
    # bool is an int subclass, and True as an id is always a bug.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidRequestError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    number = int(value)
    if not 0 <= number <= _INT64_MAX:
        raise InvalidRequestError(f"{what} must be in 0..{_INT64_MAX}, got {number}")
    return number


def _encode_scene(schema: SceneSchema, scene: Mapping[str, str]) -> np.ndarray:
    if not isinstance(scene, Mapping):
        raise InvalidRequestError(f"scene must be a mapping from feature name to text, got {type(scene).__name__}")
    published = set(schema.features)
    missing = [f for f in schema.features if f not in scene]
    unknown = sorted(repr(k) for k in scene if k not in published)
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(map(repr, missing))}")
        if unknown:
            problems.append(f"unknown {', '.join(unknown)}")
        raise InvalidRequestError(
            f"scene features do not match the server's ({', '.join(schema.features)}): {'; '.join(problems)}"
        )
    texts = []
    for feature in schema.features:
        try:  # the server's own checks (larr.scene_request), so a request it would refuse never leaves
            texts.append(check_scene_text(scene[feature], f"scene feature {feature!r}").encode("utf-8"))
        except SceneTextError as error:
            raise InvalidRequestError(str(error)) from error
    return np.array(texts, dtype=np.object_)  # (K,) UTF-8 bytes


def _encode_items(schema: SceneSchema, item_ids: Sequence[int]) -> np.ndarray:
    if isinstance(item_ids, np.ndarray):
        if item_ids.ndim != 1 or item_ids.dtype.kind not in "iu":
            raise InvalidRequestError(
                f"item_ids must be a 1-D integer array, got shape {item_ids.shape} dtype {item_ids.dtype}"
            )
        if item_ids.size and (item_ids.min() < 0 or int(item_ids.max()) > _INT64_MAX):
            raise InvalidRequestError(f"item_ids must be in 0..{_INT64_MAX}")
        items = item_ids.astype(np.int64)
    elif isinstance(item_ids, Sequence) and not isinstance(item_ids, (str, bytes)):
        items = np.array([_check_id(v, f"item_ids[{i}]") for i, v in enumerate(item_ids)], dtype=np.int64)
    else:
        raise InvalidRequestError(f"item_ids must be a sequence of integers, got {type(item_ids).__name__}")
    if items.size == 0:
        raise InvalidRequestError("item_ids must not be empty")
    if items.size > schema.max_candidates:
        raise InvalidRequestError(
            f"got {items.size} item ids; the server accepts at most {schema.max_candidates} (max_candidates): send "
            f"them in requests of at most {schema.max_candidates}, or re-export with `larr export --max-candidates N`"
        )
    return items


def encode_request(
    schema: SceneSchema, scene: Mapping[str, str], user_id: int, item_ids: Sequence[int]
) -> EncodedRequest:
    """Validate one request against ``schema`` and turn it into the ensemble's input arrays.

    Raises :class:`InvalidRequestError` naming the offending field.
    """
    return EncodedRequest(
        scene_text=_encode_scene(schema, scene),
        user_id=np.array([_check_id(user_id, "user_id")], dtype=np.int64),
        item_ids=_encode_items(schema, item_ids),
    )


def _encode_all(schema: SceneSchema, requests: Sequence[ScoreRequest]) -> list[EncodedRequest]:
    # Everything is checked before anything is sent, so one bad request never leaves the batch half-sent.
    encoded = []
    for index, request in enumerate(requests):
        if not isinstance(request, ScoreRequest):
            raise InvalidRequestError(f"request {index}: expected a ScoreRequest, got {type(request).__name__}")
        try:
            encoded.append(encode_request(schema, request.scene, request.user_id, request.item_ids))
        except InvalidRequestError as error:
            raise InvalidRequestError(f"request {index}: {error}") from error
    return encoded


PathArg = str | os.PathLike[str]

# gRPC reports a TLS server reached in plaintext only as a closed socket; say what is likely wrong.
_TLS_MISMATCH_SIGN = "Socket closed"
_PLAINTEXT_HINT = " (this client connects without TLS: if the server uses TLS, pass ssl=True / larr query --tls)"


def tls_arguments(
    ssl: bool,
    root_certificates: PathArg | None = None,
    private_key: PathArg | None = None,
    certificate_chain: PathArg | None = None,
) -> dict[str, Any]:
    """The TLS keyword arguments of ``tritonclient.grpc[.aio].InferenceServerClient``, checked.

    ``root_certificates``: PEM CA(s) to trust for the server (None: the system's roots); ``private_key`` and
    ``certificate_chain``: PEM key and certificate of this client, for a server that requires client
    certificates (mutual TLS). tritonclient ignores the files unless ``ssl`` is true, so giving one without it
    is an error here rather than a silent plaintext connection.
    """
    files = {"root_certificates": root_certificates, "private_key": private_key, "certificate_chain": certificate_chain}
    given = {name: value for name, value in files.items() if value is not None}
    if not ssl:
        if given:
            raise ValueError(f"{', '.join(given)} given without ssl=True; the connection would be plaintext")
        return {}
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("private_key and certificate_chain go together: the client certificate and its key")
    for name, value in given.items():
        if not Path(value).is_file():
            raise FileNotFoundError(f"{name} file {value} does not exist")
    return {"ssl": True, **{name: str(value) for name, value in given.items()}}


def _wrap(error: InferenceServerException, plaintext: bool = False) -> ServerError:
    message = error.message()
    if plaintext and error.status() == UNAVAILABLE_STATUS and _TLS_MISMATCH_SIGN in message:
        message += _PLAINTEXT_HINT
    return server_error(message, error.status())


def _decode(result: Any, n_items: int) -> np.ndarray:
    """The CTR array of a response, checked against the contract (float32, one score per item)."""
    ctr = result.as_numpy(CTR)
    if ctr is None:
        raise ServerError(f"the response has no {CTR} output")
    if ctr.ndim == 2 and ctr.shape[0] == 1:  # a batching ensemble answers [1, N]
        ctr = ctr[0]
    if ctr.shape != (n_items,):
        raise ServerError(f"the server returned {CTR} of shape {ctr.shape} for {n_items} items")
    return ctr.astype(np.float32, copy=False)


def _collect(outcomes: Sequence[np.ndarray | BaseException], return_exceptions: bool) -> list[Any]:
    """Results in request order; without ``return_exceptions`` the first failure is raised, naming its request."""
    if not return_exceptions:
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, ServerError):
                raise type(outcome)(f"request {index}: {outcome.message}", outcome.status) from outcome
            if isinstance(outcome, BaseException):
                raise outcome
    return list(outcomes)


def _parameters(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.config.parameters.items()}


class _ClientSettings:
    """What :class:`LarrClient` and :class:`AsyncLarrClient` are constructed with, checked once; and how both turn
    the ensemble's model config into its :class:`SceneSchema`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model_name: str = ENSEMBLE_NAME,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        *,
        schema: SceneSchema | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        ssl: bool = False,
        root_certificates: PathArg | None = None,
        private_key: PathArg | None = None,
        certificate_chain: PathArg | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._tls = tls_arguments(ssl, root_certificates, private_key, certificate_chain)
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._headers = dict(headers) if headers else None
        self._schema = schema
        self._open()

    def _open(self) -> None:
        """The client's own lock and channel (blocking or asyncio)."""
        raise NotImplementedError

    def _schema_of(self, config: Any) -> SceneSchema:
        """The schema a ``get_model_config`` answer publishes (its parameters and batching)."""
        return SceneSchema.from_parameters(_parameters(config), self.model_name, batched=config.config.max_batch_size > 0)


class LarrClient(_ClientSettings):
    """Blocking client of the ``larr`` ensemble over gRPC. Thread-safe; one per process is enough.

    ``schema`` can be given to skip the model-config lookup (tests, or a client pinned to a schema);
    otherwise it is fetched from the server on first use. ``ssl`` and the PEM files: see :func:`tls_arguments`.
    """

    def _open(self) -> None:
        self._schema_lock = threading.Lock()
        # Creating the channel does not connect; the first call does.
        self._grpc = grpcclient.InferenceServerClient(self.url, **self._tls)

    @property
    def schema(self) -> SceneSchema:
        """The server's published scene schema (fetched once, then cached)."""
        if self._schema is None:
            with self._schema_lock:
                if self._schema is None:
                    try:
                        config = self._grpc.get_model_config(
                            self.model_name, headers=self._headers, client_timeout=self.timeout_s
                        )
                    except InferenceServerException as error:
                        raise _wrap(error, not self._tls) from error
                    self._schema = self._schema_of(config)
        return self._schema

    def score(self, scene: Mapping[str, str], user_id: int, item_ids: Sequence[int]) -> np.ndarray:
        """Click probabilities of ``item_ids`` for ``user_id`` in ``scene``: float32, shape (N,)."""
        encoded = encode_request(self.schema, scene, user_id, item_ids)
        try:
            result = self._grpc.infer(
                self.model_name,
                encoded.infer_inputs(self.schema.batched),
                outputs=[grpcclient.InferRequestedOutput(CTR)],
                client_timeout=self.timeout_s,
                headers=self._headers,
            )
        except InferenceServerException as error:
            raise _wrap(error, not self._tls) from error
        return _decode(result, encoded.item_ids.size)

    def score_many(self, requests: Sequence[ScoreRequest], *, return_exceptions: bool = False) -> list[Any]:
        """Score many requests concurrently (at most ``max_in_flight`` at a time); results in order.

        With ``return_exceptions`` a failed request's slot holds its :class:`LarrError` instead of
        raising the first one.
        """
        encoded = _encode_all(self.schema, requests)
        futures: list[Future[np.ndarray]] = [Future() for _ in encoded]
        slots = threading.BoundedSemaphore(self.max_in_flight)

        for request, future in zip(encoded, futures):
            slots.acquire()

            def done(
                result: Any,
                error: InferenceServerException | None,
                future: Future[np.ndarray] = future,
                n: int = request.item_ids.size,
            ) -> None:
                # Runs on a gRPC thread; everything goes into the future, nothing may escape.
                try:
                    if error is not None:
                        future.set_exception(_wrap(error, not self._tls))
                    else:
                        future.set_result(_decode(result, n))
                except Exception as decode_error:  # noqa: BLE001 -- an unset future would block future.exception() forever
                    future.set_exception(decode_error)
                finally:
                    slots.release()

            try:
                self._grpc.async_infer(
                    self.model_name,
                    request.infer_inputs(self.schema.batched),
                    callback=done,
                    outputs=[grpcclient.InferRequestedOutput(CTR)],
                    client_timeout=self.timeout_s,
                    headers=self._headers,
                )
            except InferenceServerException as error:
                slots.release()
                future.set_exception(_wrap(error, not self._tls))

        outcomes: list[np.ndarray | BaseException] = []
        for future in futures:
            error = future.exception()  # waits; every call ends by its deadline or the channel closing
            outcomes.append(future.result() if error is None else error)
        return _collect(outcomes, return_exceptions)

    def close(self) -> None:
        """Close the gRPC channel."""
        self._grpc.close()

    def __enter__(self) -> LarrClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncLarrClient(_ClientSettings):
    """asyncio client of the ``larr`` ensemble over ``tritonclient.grpc.aio``; same API as :class:`LarrClient`,
    with coroutines. Use it from one event loop."""

    def _open(self) -> None:
        self._schema_lock = asyncio.Lock()
        # Created on first use, inside the event loop that will drive it.
        self._grpc: grpcclient_aio.InferenceServerClient | None = None

    def _client(self) -> grpcclient_aio.InferenceServerClient:
        if self._grpc is None:
            self._grpc = grpcclient_aio.InferenceServerClient(self.url, **self._tls)
        return self._grpc

    async def get_schema(self) -> SceneSchema:
        """The server's published scene schema (fetched once, then cached)."""
        if self._schema is None:
            async with self._schema_lock:
                if self._schema is None:
                    try:
                        config = await self._client().get_model_config(
                            self.model_name, headers=self._headers, client_timeout=self.timeout_s
                        )
                    except InferenceServerException as error:
                        raise _wrap(error, not self._tls) from error
                    self._schema = self._schema_of(config)
        return self._schema

    async def _infer(self, encoded: EncodedRequest) -> np.ndarray:
        try:
            result = await self._client().infer(
                self.model_name,
                encoded.infer_inputs(self._schema is not None and self._schema.batched),
                outputs=[grpcclient.InferRequestedOutput(CTR)],
                client_timeout=self.timeout_s,
                headers=self._headers,
            )
        except InferenceServerException as error:
            raise _wrap(error, not self._tls) from error
        return _decode(result, encoded.item_ids.size)

    async def score(self, scene: Mapping[str, str], user_id: int, item_ids: Sequence[int]) -> np.ndarray:
        """Click probabilities of ``item_ids`` for ``user_id`` in ``scene``: float32, shape (N,)."""
        return await self._infer(encode_request(await self.get_schema(), scene, user_id, item_ids))

    async def score_many(self, requests: Sequence[ScoreRequest], *, return_exceptions: bool = False) -> list[Any]:
        """Score many requests concurrently (at most ``max_in_flight`` at a time); results in order."""
        encoded = _encode_all(await self.get_schema(), requests)
        slots = asyncio.Semaphore(self.max_in_flight)

        async def one(request: EncodedRequest) -> np.ndarray:
            async with slots:
                return await self._infer(request)

        outcomes = await asyncio.gather(*(one(r) for r in encoded), return_exceptions=True)
        return _collect(outcomes, return_exceptions)

    async def close(self) -> None:
        """Close the gRPC channel (if one was opened)."""
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None

    async def __aenter__(self) -> AsyncLarrClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
