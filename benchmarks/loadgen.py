"""A closed-loop load generator in Python that drives both the Triton ensemble (gRPC) and the FastAPI
service (HTTP/JSON), for a like-for-like comparison of the two servers.

    result = run_closed_loop(HttpTransport("http://127.0.0.1:8080"), requests, concurrency=16)
    result = run_closed_loop(TritonTransport("127.0.0.1:8001", "larr"), requests, concurrency=16)
    await timed_closed_loop(transport, stream_source, concurrency=64, seconds=600, on_outcome=record)  # the soak

``concurrency`` workers each send a request, wait for its answer and send the next, until the
requests are used up (each request is sent exactly once, in order of availability). Requests are
encoded before the clock starts, so both transports time only sending, serving and receiving.
perf_analyzer cannot drive a plain HTTP/JSON service, so this generator is the one yardstick used for
both sides of that comparison; perf_analyzer's own numbers for Triton are reported separately.

:func:`timed_closed_loop` is the same loop bounded in time instead of in requests (``larr soak``): it
draws each request when a worker is free, and a failed request is recorded as an :class:`Outcome` with
its gRPC status instead of ending the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from larr.benchmarks.workload import BenchRequest
from larr.contract import CTR


class LoadError(RuntimeError):
    """A request failed during a load run (a benchmark with failed requests measures nothing useful)."""


class Transport(Protocol):
    async def open(self, concurrency: int) -> None: ...

    def encode(self, request: BenchRequest) -> Any:
        """The request in the transport's wire form, built before timing starts."""

    async def send(self, encoded: Any) -> None:
        """Send one encoded request and wait for a successful answer (raise otherwise)."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    latencies_s: np.ndarray  # (requests,) per-request latency

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_us(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e6)

    def to_json(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "seconds": self.seconds,
            "throughput": self.throughput,
            "avg_latency_us": float(self.latencies_s.mean() * 1e6),
            "p50_us": self.percentile_us(50),
            "p90_us": self.percentile_us(90),
            "p95_us": self.percentile_us(95),
            "p99_us": self.percentile_us(99),
        }


async def closed_loop(transport: Transport, requests: Sequence[BenchRequest], concurrency: int) -> LoadResult:
    """Send every request once with ``concurrency`` in flight; see the module docstring."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not requests:
        raise ValueError("no requests to send")
    await transport.open(concurrency)  # first: the transport may learn how to encode from the server
    try:
        encoded = [transport.encode(r) for r in requests]
    except BaseException:
        await transport.close()
        raise
    latencies = np.zeros(len(encoded))
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(encoded):
            index = next_index
            next_index += 1  # one event loop: no other worker runs between the check and this line
            t0 = time.perf_counter()
            await transport.send(encoded[index])
            latencies[index] = time.perf_counter() - t0

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(encoded)))))
        seconds = time.perf_counter() - start
    finally:
        await transport.close()
    return LoadResult(concurrency, len(encoded), seconds, latencies)


def run_closed_loop(transport: Transport, requests: Sequence[BenchRequest], concurrency: int) -> LoadResult:
    return asyncio.run(closed_loop(transport, requests, concurrency))


@dataclass(frozen=True)
class Outcome:
    """One request of :func:`timed_closed_loop`."""

    finished_s: float  # when its answer (or error) arrived: time.perf_counter()
    latency_s: float
    status: str | None  # None: answered; else the gRPC status name (see error_status)


def error_status(error: BaseException) -> str:
    """The gRPC status name of a failed request ('UNAVAILABLE', 'DEADLINE_EXCEEDED', ...), found on the
    tritonclient exception a transport raised (``raise LoadError(...) from error``), else the error's type."""
    cause: BaseException | None = error
    while cause is not None:
        status = getattr(cause, "status", None)
        if callable(status) and status():
            return str(status()).removeprefix("StatusCode.")  # tritonclient spells it 'StatusCode.UNAVAILABLE'
        cause = cause.__cause__
    return type(error).__name__


async def timed_closed_loop(
    transport: Transport,
    next_request: Callable[[], BenchRequest],
    concurrency: int,
    seconds: float,
    on_outcome: Callable[[Outcome], None],
) -> None:
    """Keep ``concurrency`` requests in flight for ``seconds``; each from ``next_request()`` when a worker is
    free, each reported to ``on_outcome`` as it finishes (in order of finishing). Requests already in
    flight at the deadline are awaited and reported. Encoding is not timed, as in :func:`closed_loop`."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    await transport.open(concurrency)
    start = time.perf_counter()

    async def worker() -> None:
        while time.perf_counter() - start < seconds:
            encoded = transport.encode(next_request())
            t0 = time.perf_counter()
            status = None
            try:
                await transport.send(encoded)
            except Exception as error:  # noqa: BLE001 - a soak counts failures, it does not stop at one
                status = error_status(error)
            t1 = time.perf_counter()
            on_outcome(Outcome(t1, t1 - t0, status))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await transport.close()


class HttpTransport:
    """POST ``/score`` with the request as JSON (the FastAPI service's contract)."""

    def __init__(self, base_url: str, timeout_s: float = 600.0):
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._client: Any = None

    async def open(self, concurrency: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, limits=limits)

    def encode(self, request: BenchRequest) -> bytes:
        return json.dumps(request.to_json()).encode("utf-8")

    async def send(self, encoded: bytes) -> None:
        response = await self._client.post("/score", content=encoded, headers={"content-type": "application/json"})
        if response.status_code != 200:
            raise LoadError(f"POST /score answered {response.status_code}: {response.text[:300]}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class TritonTransport:
    """``infer`` on a Triton model over gRPC (asyncio client), inputs built with the project's client code."""

    def __init__(self, url: str, model: str, timeout_s: float = 600.0):
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self._client: Any = None
        self._batched = False  # a batching model takes every input with a batch axis of 1

    async def open(self, concurrency: int) -> None:
        import tritonclient.grpc.aio as grpcclient_aio

        self._client = grpcclient_aio.InferenceServerClient(self.url)
        config = await self._client.get_model_config(self.model)
        self._batched = config.config.max_batch_size > 0

    def encode(self, request: BenchRequest) -> list:
        from larr.clients.client import EncodedRequest

        return EncodedRequest(
            scene_text=np.array([t.encode("utf-8") for t in request.scene], dtype=np.object_),
            user_id=np.array([request.user_id], dtype=np.int64),
            item_ids=np.array(request.item_ids, dtype=np.int64),
        ).infer_inputs(self._batched)

    async def send(self, encoded: list) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        try:
            await self._client.infer(
                self.model, encoded, outputs=[grpcclient.InferRequestedOutput(CTR)], client_timeout=self.timeout_s
            )
        except InferenceServerException as error:
            raise LoadError(f"{self.model}: {error.message()}") from error

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
