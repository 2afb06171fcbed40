"""OnnxRuntime refuses to start when ONNX Runtime silently fell back from CUDA to the CPU.

No GPU here, so CUDA's availability is faked -- and only that: the session is a real ONNX Runtime
session, and the fallback is ONNX Runtime's own (given a CUDA provider it cannot start, it warns and runs
on the CPU). One test fakes a session that did activate CUDA, to show the check refuses only the fallback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from larr.serving.runtime import OnnxRuntime, RuntimeSpec, require_active_providers

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@pytest.fixture(scope="module")
def identity_onnx(tmp_path_factory) -> Path:
    """A one-node graph: x (N,) int64 -> y = x."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    path = tmp_path_factory.mktemp("onnx") / "identity.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cuda_listed(monkeypatch):
    """This onnxruntime claims a CUDA provider (as onnxruntime-gpu does before it tries to load CUDA)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


def test_cuda_that_onnxruntime_did_not_activate_is_an_error(identity_onnx, cuda_listed):
    with pytest.raises(RuntimeError, match="did not activate CUDAExecutionProvider .*active: CPUExecutionProvider"):
        OnnxRuntime(identity_onnx, ["x"], ["y"], RuntimeSpec(device="cuda"))


def test_an_active_cuda_provider_is_accepted(identity_onnx, cuda_listed, monkeypatch):
    real_session = ort.InferenceSession
    requested = []

    class CudaSession(real_session):  # a session that reports what it was asked for, as a working GPU host's does
        def __init__(self, path, sess_options=None, providers=None):
            requested.append(providers)
            super().__init__(path, sess_options=sess_options, providers=[CPU])

        def get_providers(self):
            return [CUDA, CPU]

    monkeypatch.setattr(ort, "InferenceSession", CudaSession)
    runtime = OnnxRuntime(identity_onnx, ["x"], ["y"], RuntimeSpec(device="cuda:1"))
    assert requested == [[(CUDA, {"device_id": 1}), CPU]]
    np.testing.assert_array_equal(runtime.run_numpy([np.arange(3)]), np.arange(3))


def test_the_cpu_device_needs_only_the_cpu_provider(identity_onnx):
    runtime = OnnxRuntime(identity_onnx, ["x"], ["y"], RuntimeSpec(device="cpu"))
    assert runtime.session.get_providers() == [CPU]


class ReportingSession:
    def __init__(self, active: list[str]):
        self.active = active

    def get_providers(self) -> list[str]:
        return self.active


def test_require_active_providers_names_what_is_missing():
    require_active_providers(ReportingSession([CUDA, CPU]), [(CUDA, {"device_id": 0}), CPU], Path("m.onnx"))
    with pytest.raises(RuntimeError) as error:
        require_active_providers(ReportingSession([CPU]), [(CUDA, {"device_id": 0}), CPU], Path("m.onnx"))
    assert str(error.value).startswith("m.onnx: ONNX Runtime did not activate CUDAExecutionProvider (active: CPUExecutionProvider)")
