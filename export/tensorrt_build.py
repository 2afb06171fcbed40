"""Build TensorRT engines (``model.plan``) from the exported ONNX graphs, FP16 with FP32 islands.

    from larr.export.tensorrt_build import build_engine

    build_engine("embedder.onnx", "model.plan", {
        "input_ids": ((1, 1), (16, 16), (64, 48)),        # (min, opt, max) per input: batch x sequence
        "attention_mask": ((1, 1), (16, 16), (64, 48)),
    })

Needs the ``tensorrt`` Python package, TensorRT >= 10 (our graphs take INT64 ids, which 8.x would turn
into INT32 engine inputs that no longer match the Triton configs), and a CUDA GPU; all are checked first
and reported as :class:`TensorRTUnavailableError` with what is missing. ``tensorrt`` is imported
only inside the functions, so this module imports anywhere.

Precision policy (``fp16=True``): everything runs in FP16 except the layers whose FP16 results are
known to break embeddings and probabilities, which are pinned to FP32 (``layer.precision`` and every
float output's type) under ``OBEY_PRECISION_CONSTRAINTS``, so TensorRT may not override the pin:

* LayerNorm (``INormalizationLayer``), Softmax, every reduction (RMSNorm's mean of squares, the L2
  norm of the output embedding) -- sums over a dimension overflow or lose the small terms in FP16;
* ``Pow``/``Div``/``Sqrt``/``Reciprocal``/``Exp``/``Log`` -- the rest of RMSNorm and the L2
  normalisation (a square of 300 already overflows FP16's 65504);
* ``Cos``/``Sin`` and every layer of the rotary-embedding module (scope ``rotary_emb``): FP16 angles
  ``position * inv_freq`` lose whole radians at long positions;
* every float layer inside a module whose scope name contains ``norm`` (``input_layernorm``,
  ``post_attention_layernorm``, ``norm1``, ...): RMSNorm is exported as loose elementwise ops,
  recognisable only by the module scope the TorchScript exporter writes into the node names.
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Shape = Sequence[int]
Profiles = Mapping[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max) shape
DEFAULT_WORKSPACE_BYTES = 4 << 30
MIN_TENSORRT_MAJOR = 10
_FP32_SCOPES = re.compile(r"norm|rotary_emb", re.IGNORECASE)


class TensorRTUnavailableError(RuntimeError):
    """TensorRT cannot run here: the ``tensorrt`` module or a CUDA GPU is missing."""


class EngineBuildError(RuntimeError):
    """TensorRT rejected the ONNX graph or could not build an engine from it."""


# --------------------------------------------------------------------------------------------- availability


def cuda_device_count() -> int:
    """CUDA GPUs visible through the driver API (``libcuda``); 0 when there is no driver or no GPU.

    Asks the driver directly so the check needs neither a CUDA build of torch nor cuda-python.
    """
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot build engines here (a sentence), or None when it can."""
    try:
        import tensorrt
    except ImportError as err:
        return (
            f"the `tensorrt` Python package is not installed ({err}); install TensorRT 10 "
            "(`pip install tensorrt`) or use the NGC tritonserver image"
        )
    if int(tensorrt.__version__.split(".")[0]) < MIN_TENSORRT_MAJOR:
        return f"TensorRT {tensorrt.__version__} is too old: INT64 engine inputs need TensorRT >= {MIN_TENSORRT_MAJOR}"
    if cuda_device_count() == 0:
        return "no CUDA GPU is visible (libcuda.so.1 missing, cuInit failed or zero devices); TensorRT needs one"
    return None


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailableError` saying what is missing."""
    problem = tensorrt_problem()
    if problem is not None:
        raise TensorRTUnavailableError(f"TensorRT is unavailable: {problem}")
    import tensorrt

    return tensorrt


# --------------------------------------------------------------------------------------------- building


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    profiles: Profiles,
    fp16: bool = True,
    *,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> Path:
    """ONNX graph -> serialized TensorRT engine at ``plan_path`` with one optimisation profile.

    ``profiles`` gives ``(min, opt, max)`` shapes for every input with a dynamic dimension; inputs
    with static shapes may be left out. ``fp16`` enables FP16 with the FP32 pins of the module
    docstring. External data (``model.onnx.data``) is found next to ``onnx_path``.
    """
    trt = require_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.add_optimization_profile(_profile(trt, builder, network, profiles, onnx_path))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = pin_fp32_layers(trt, network)
        log.info("%s: %d of %d layers pinned to FP32", onnx_path.name, len(pinned), network.num_layers)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def _profile(trt: ModuleType, builder: Any, network: Any, profiles: Profiles, onnx_path: Path) -> Any:
    profile = builder.create_optimization_profile()
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    unknown = sorted(set(profiles) - set(inputs))
    if unknown:
        raise EngineBuildError(f"{onnx_path}: profiles name {unknown}, not inputs of the graph {sorted(inputs)}")
    for name, tensor in inputs.items():
        dims = tuple(tensor.shape)
        if name in profiles:
            low, opt, high = (tuple(int(d) for d in shape) for shape in profiles[name])
            _check_profile(name, dims, low, opt, high)
            profile.set_shape(name, low, opt, high)
        elif any(d < 0 for d in dims):
            raise EngineBuildError(f"{onnx_path}: input {name!r} has dynamic shape {dims}, no (min, opt, max) profile")
    return profile


def _check_profile(name: str, dims: tuple[int, ...], low: tuple, opt: tuple, high: tuple) -> None:
    if not len(dims) == len(low) == len(opt) == len(high):
        raise EngineBuildError(f"profile of {name!r}: shapes {low}, {opt}, {high} do not all have rank {len(dims)}")
    for axis, (fixed, a, b, c) in enumerate(zip(dims, low, opt, high)):
        if not 0 <= a <= b <= c:
            raise EngineBuildError(f"profile of {name!r}, axis {axis}: need 0 <= min <= opt <= max, got {a}, {b}, {c}")
        if fixed >= 0 and not a == b == c == fixed:
            raise EngineBuildError(f"profile of {name!r}, axis {axis}: the graph fixes it to {fixed}, not {a}..{c}")


def pin_fp32_layers(trt: ModuleType, network: Any) -> list[str]:
    """Pin the precision-sensitive layers (module docstring) to FP32; returns their names."""
    always = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    unary_ops = {getattr(trt.UnaryOperation, op) for op in ("SQRT", "RECIP", "EXP", "LOG", "COS", "SIN")}
    elementwise_ops = {trt.ElementWiseOperation.POW, trt.ElementWiseOperation.DIV}
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not outputs or any(o.dtype != trt.float32 for o in outputs):
            continue  # shape arithmetic, masks, ids: precision does not apply
        sensitive = (
            layer.type in always
            or (layer.type == trt.LayerType.UNARY and _as(trt.IUnaryLayer, layer).op in unary_ops)
            or (layer.type == trt.LayerType.ELEMENTWISE and _as(trt.IElementWiseLayer, layer).op in elementwise_ops)
            or _FP32_SCOPES.search(layer.name or "") is not None
        )
        if sensitive:
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                layer.set_output_type(i, trt.float32)
            pinned.append(layer.name)
    return pinned


def _as(cls: type, layer: Any) -> Any:
    # network.get_layer returns the ILayer base; its subclass attributes (``op``) need the cast
    # that polygraphy and TensorRT's own samples do the same way.
    layer.__class__ = cls
    return layer


# --------------------------------------------------------------------------------------------- running (tests, checks)


def run_engine(plan_path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a serialized engine once on GPU 0 (device buffers via torch CUDA tensors); outputs by name.

    For parity checks and benchmarks, not for serving (Triton runs the plans there).
    """
    trt = require_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("run_engine needs a CUDA build of torch for device buffers")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise EngineBuildError(f"{plan_path}: TensorRT could not deserialize the engine")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    missing = sorted(set(inputs) - set(feeds))
    if missing:
        raise ValueError(f"{plan_path}: no value for engine input(s) {missing}")
    buffers = {}
    for name in inputs:
        value = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
        context.set_input_shape(name, tuple(value.shape))
        buffers[name] = value
    for name in names:
        if name in buffers:
            continue
        shape = tuple(context.get_tensor_shape(name))
        dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
        buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
    for name, value in buffers.items():
        context.set_tensor_address(name, value.data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise EngineBuildError(f"{plan_path}: execution failed")
    stream.synchronize()
    return {name: buffers[name].cpu().numpy() for name in names if name not in inputs}


def engine_io_names(plan_path: str | Path) -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}`` tensor names of a serialized engine."""
    trt = require_tensorrt()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(plan_path).read_bytes())
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    return {"inputs": [n for n in names if is_input[n]], "outputs": [n for n in names if not is_input[n]]}


__all__ = [
    "EngineBuildError",
    "TensorRTUnavailableError",
    "build_engine",
    "cuda_device_count",
    "engine_io_names",
    "pin_fp32_layers",
    "require_tensorrt",
    "run_engine",
    "tensorrt_problem",
]
