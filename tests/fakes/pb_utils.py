"""A stand-in for Triton's ``triton_python_backend_utils`` (``pb_utils``): what the python-backend adapters
(model_repository/<model>/1/model.py) and the larr.serving helpers that take ``pb_utils`` as an argument use,
spelled as the python backend spells it (accessors are methods: ``tensor.name()``, ``error.message()``).

The fixture ``pb_utils`` (tests/unit/conftest.py) loads a fresh copy of this module for each test and installs it
as ``sys.modules["triton_python_backend_utils"]``, so an adapter's ``import triton_python_backend_utils`` gets it
and no state leaks from one test into the next.

Beyond pb_utils, for the tests to drive and read it:

- ``serve_model(name, execute)``: a BLS ``InferenceRequest(model_name=name, ...).exec()`` / ``async_exec()``
  answers with ``execute([request])[0]``, so an adapter's own ``execute`` can serve another's BLS calls;
  ``bls_requests`` lists every BLS request in the order sent.
- ``request(inputs)``: a request as Triton hands it to ``execute``; its ``response_sender.responses`` and
  ``.flags`` hold what a decoupled-style adapter sent.
- ``Metric.labels`` / ``Metric.increments``, and ``metric_families`` (every ``MetricFamily`` created).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED, TRITONSERVER_MEMORY_GPU = 0, 1, 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonModelException(Exception):
    """What the python backend raises for a failed call (e.g. a Metric used after its family is gone)."""


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL):
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code})"


class Tensor:
    def __init__(self, name: str, array: Any):
        self._name, self._array = name, np.asarray(array)

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        import torch.utils.dlpack

        return Tensor(name, torch.utils.dlpack.from_dlpack(capsule).cpu().numpy())

    def name(self) -> str:
        return self._name

    def is_cpu(self) -> bool:
        return True

    def as_numpy(self) -> np.ndarray:
        return self._array


class PreferredMemory:
    def __init__(self, preferred_memory_type: int, preferred_device_id: int = 0):
        self.preferred_memory_type, self.preferred_device_id = preferred_memory_type, preferred_device_id


class InferenceResponse:
    def __init__(self, output_tensors: Sequence[Tensor] | None = None, error: TritonError | None = None):
        self._outputs, self._error = list(output_tensors or ()), error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class ResponseSender:
    def __init__(self) -> None:
        self.responses: list[InferenceResponse | None] = []
        self.flags: list[int] = []

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if TRITONSERVER_RESPONSE_COMPLETE_FINAL in self.flags:
            raise TritonModelException("a response was sent after the final one")
        self.responses.append(response)
        self.flags.append(flags)


_models: dict[str, Callable[[list[Any]], list[InferenceResponse]]] = {}
bls_requests: list[InferenceRequest] = []


class InferenceRequest:
    def __init__(
        self,
        model_name: str = "",
        inputs: Sequence[Tensor] = (),
        requested_output_names: Sequence[str] = (),
        preferred_memory: PreferredMemory | None = None,
        **_: Any,
    ):
        self.model_name = model_name
        self._inputs, self._outputs = list(inputs), list(requested_output_names)
        self.preferred_memory = preferred_memory
        self.response_sender = ResponseSender()

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._outputs

    def get_response_sender(self) -> ResponseSender:
        return self.response_sender

    def exec(self) -> InferenceResponse:
        bls_requests.append(self)
        if self.model_name not in _models:
            return InferenceResponse(error=TritonError(f"Request for unknown model: '{self.model_name}'", TritonError.NOT_FOUND))
        (response,) = _models[self.model_name]([self])
        return response

    async def async_exec(self) -> InferenceResponse:
        return self.exec()


def serve_model(name: str, execute: Callable[[list[Any]], list[InferenceResponse]]) -> None:
    """BLS requests to ``name`` are answered by ``execute`` (one request per call)."""
    _models[name] = execute


def request(inputs: Mapping[str, Any]) -> InferenceRequest:
    """A request as Triton hands it to ``execute``: one tensor per ``{name: array}``."""
    return InferenceRequest(inputs=[Tensor(name, value) for name, value in inputs.items()])


def _by_name(tensors: Sequence[Tensor], name: str) -> Tensor | None:
    return next((t for t in tensors if t.name() == name), None)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return _by_name(request.inputs(), name)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return _by_name(response.output_tensors(), name)


def get_input_config_by_name(model_config: Mapping[str, Any], name: str) -> dict | None:
    return next((c for c in model_config.get("input", ()) if c["name"] == name), None)


def get_output_config_by_name(model_config: Mapping[str, Any], name: str) -> dict | None:
    return next((c for c in model_config.get("output", ()) if c["name"] == name), None)


class Metric:
    def __init__(self, labels: Mapping[str, str]):
        self.labels, self.increments, self._value = dict(labels), [], 0.0

    def increment(self, value: float) -> None:
        self.increments.append(value)
        self._value += value

    def set(self, value: float) -> None:
        self._value = value

    def value(self) -> float:
        return self._value


metric_families: list[MetricFamily] = []


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

    def __init__(self, name: str, description: str, kind: str):
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[Metric] = []
        metric_families.append(self)

    def Metric(self, labels: Mapping[str, str] | None = None) -> Metric:  # noqa: N802 -- pb_utils' spelling
        metric = Metric(labels or {})
        self.metrics.append(metric)
        return metric
