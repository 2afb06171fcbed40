"""Model runtimes for the python-backend adapters: ONNX Runtime (CPU or CUDA) or PyTorch (CPU or CUDA).

The adapters pick one from their model config (``runtime``, ``device``, ``model_file``,
``intra_op_threads`` parameters, see larr.contract), so a Triton build without the TensorRT or
ONNX Runtime backends (like the pytriton bundle) still serves every model, on a GPU too.
Inputs are fed in the order of the model config's inputs; outputs come back in config order.
With ``shape_buckets`` the torch runtime pads every call to a static shape, and on CUDA replays a CUDA graph
captured per shape at load (larr.serving.graphs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from larr.contract import PARAM_DEVICE, PARAM_INTRA_OP_THREADS, PARAM_MODEL_FILE, PARAM_RUNTIME
from larr.serving.buckets import BatchedCTRShapes, CTRRequestShapes, EmbedderShapes, Shapes
from larr.serving.model_config import model_parameters, tensor_names  # the adapters import them from here too

ONNX_RUNTIME, TORCH_RUNTIME = "onnxruntime", "torch"
RUNTIMES = (ONNX_RUNTIME, TORCH_RUNTIME)
SERVING_META_FILE = "serving.json"  # ctr torch artifacts: {"num_users": U, "num_items": I}


def torch_shapes(config: Mapping[str, Any], embedder: bool, batched: bool) -> Shapes:
    """How the torch module of ``config`` is padded to a bucket (larr.serving.buckets); the ctr's static scene
    dims come from its first two inputs, SCENE_EMB (K', D) and SCENE_IDS (K,), without the batch axis."""
    if embedder:
        return EmbedderShapes()
    scene_dims = tuple(int(d) for d in config["input"][0]["dims"][-2:])  # JSON may write int64 dims as strings
    features = int(config["input"][1]["dims"][-1])
    shape = (scene_dims[0], scene_dims[1])
    return BatchedCTRShapes(shape, features) if batched else CTRRequestShapes(shape, features)


@dataclass(frozen=True)
class RuntimeSpec:
    runtime: str = ONNX_RUNTIME
    device: str = "cpu"
    model_file: str = "model.onnx"
    intra_op_threads: int = 0

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> "RuntimeSpec":
        params = model_parameters(config)
        spec = cls(
            runtime=params.get(PARAM_RUNTIME, cls.runtime),
            device=params.get(PARAM_DEVICE, cls.device),
            model_file=params.get(PARAM_MODEL_FILE, cls.model_file),
            intra_op_threads=int(params.get(PARAM_INTRA_OP_THREADS, cls.intra_op_threads)),
        )
        if spec.runtime not in RUNTIMES:
            raise ValueError(f"parameter {PARAM_RUNTIME}={spec.runtime!r}: expected one of {RUNTIMES}")
        if not (spec.device == "cpu" or spec.device.startswith("cuda")):
            raise ValueError(f"parameter {PARAM_DEVICE}={spec.device!r}: expected 'cpu' or 'cuda[:N]'")
        return spec


class Runtime(Protocol):
    device: str

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        """Inputs in config order (NumPy, or torch tensors for the torch runtime) -> outputs in config order."""

    def run_numpy(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """NumPy inputs -> the first output as a host NumPy array."""


class OnnxRuntime:
    """An ONNX Runtime session; CUDAExecutionProvider when the device is cuda."""

    def __init__(self, path: Path, input_names: Sequence[str], output_names: Sequence[str], spec: RuntimeSpec):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if spec.intra_op_threads:
            options.intra_op_num_threads = spec.intra_op_threads
        options.inter_op_num_threads = 1
        # several models share the CPU in one server: idle threads must yield, not spin
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if spec.device.startswith("cuda"):
            device_id = int(spec.device.partition(":")[2] or 0)
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(f"device {spec.device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        require_active_providers(self.session, providers, path)
        self.device = spec.device
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        graph_inputs = {i.name for i in self.session.get_inputs()}
        unknown = set(self.input_names) - graph_inputs
        if unknown:
            raise ValueError(f"{path}: config inputs {sorted(unknown)} are not inputs of the ONNX graph {sorted(graph_inputs)}")
        self._used_inputs = [n for n in self.input_names if n in graph_inputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {name: value for name, value in zip(self.input_names, inputs) if name in self._used_inputs}
        return self.session.run(list(self.output_names), feed)

    def run_numpy(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(inputs)[0]


def require_active_providers(session: Any, requested: Sequence[Any], path: Path) -> None:
    """Raise unless every requested execution provider is active in ``session``.

    ONNX Runtime does not fail when a provider cannot start (a CUDA/cuDNN library missing or of the wrong
    version, no visible GPU): it logs a warning and runs on the next one in the list, the CPU -- a model
    asked to serve on the GPU would then serve, slowly, on the CPU with nothing in its health to say so.
    ``requested``: the ``providers`` list given to the session (names, or ``(name, options)`` pairs).
    """
    active = session.get_providers()
    names = [p[0] if isinstance(p, tuple) else p for p in requested]
    inactive = [name for name in names if name not in active]
    if inactive:
        raise RuntimeError(
            f"{path}: ONNX Runtime did not activate {', '.join(inactive)} (active: {', '.join(active)}); it would run "
            "on the CPU instead. Check the onnxruntime-gpu install against the CUDA/cuDNN libraries and the GPU "
            "visible to this process (ONNX Runtime's log names the library that failed)"
        )


class TorchRuntime:
    """The PyTorch modules themselves (TextEmbedder or ServingCTR), on CPU or CUDA; tensors in and out.

    ``config`` with ``shape_buckets``: calls are padded to buckets (and on CUDA replayed from CUDA graphs),
    larr.serving.graphs; without it, every call runs eagerly in float32 at its own shape.
    """

    def __init__(self, path: Path, spec: RuntimeSpec, batched: bool = False, config: Mapping[str, Any] | None = None):
        import torch

        from larr.models.ctr_model import BatchedServingCTR, LarrCTR, ServingCTR, index_table
        from larr.models.embedder import EMBEDDER_FILE, TextEmbedder
        from larr.serving.graphs import BucketedModule, GraphSettings

        if spec.intra_op_threads:
            torch.set_num_threads(spec.intra_op_threads)
        self.torch = torch
        self.device = spec.device
        embedder = (path / EMBEDDER_FILE).exists()
        if embedder:
            module = TextEmbedder.from_pretrained(path)
        else:
            model, vocab = LarrCTR.load(path)
            meta = json.loads((path / SERVING_META_FILE).read_text(encoding="utf-8"))
            module = (BatchedServingCTR if batched else ServingCTR)(
                model, index_table(vocab["values"][0], meta["num_users"]), index_table(vocab["values"][1], meta["num_items"])
            )
        self.module = module.eval().to(spec.device)
        settings = None if config is None else GraphSettings.from_params(model_parameters(config), spec.device)
        self.bucketed = None if settings is None else BucketedModule(
            self.module, torch_shapes(config, embedder, batched), settings, spec.device)

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        if self.bucketed is not None:
            return [self.bucketed(inputs)]
        torch = self.torch
        tensors = [x.to(self.device) if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)).to(self.device) for x in inputs]
        with torch.inference_mode():
            return [self.module(*tensors)]

    def run_numpy(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(inputs)[0].cpu().numpy()


def load_runtime(version_dir: Path, config: Mapping[str, Any], extra_inputs: Sequence[str] = ()) -> Runtime:
    """The runtime a model config asks for, loaded from ``version_dir / model_file``.

    ``extra_inputs``: graph inputs the adapter computes itself, fed after the config's inputs (the batched
    ctr graph's ``ITEM_REQUEST``); their presence selects the batched PyTorch module too.
    """
    spec = RuntimeSpec.from_model_config(config)
    path = Path(version_dir) / spec.model_file
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; export the model repository with `larr export`")
    if spec.runtime == TORCH_RUNTIME:
        return TorchRuntime(path, spec, batched=bool(extra_inputs), config=config)
    inputs, outputs = tensor_names(config)
    return OnnxRuntime(path, (*inputs, *extra_inputs), outputs, spec)
