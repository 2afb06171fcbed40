"""The torch runtime over static shapes: every call padded to a bucket (larr.serving.buckets); on CUDA, replayed from
a CUDA graph captured per bucket at load.

An eager forward of a small model on a GPU is bound by launching its kernels, not by their work (a 24-layer
embedder: ~25 ms per call whatever it carries). A captured graph launches the whole forward at once; it replays
fixed shapes and fixed buffers only, hence the buckets and the static inputs each call is copied into::

    load       for each bucket, largest first: static inputs on the device -> 3 warm-up runs on a side stream
               -> torch.cuda.graph capture (one memory pool for all) -> static output
    per call   bucket = smallest that holds the call (else: eager, unpadded) -> pad -> copy into its static
               inputs -> replay -> the output's real rows, copied out (the static output is reused)

On CPU (or with ``cuda_graphs`` false) the same steps run with the replay replaced by an eager forward of the padded
inputs: the path a GPU host serves is the path the CPU tests run, less the capture. Weights and float inputs are in
``torch_dtype`` (bf16 on CUDA by default); outputs are float32. Model-config parameters: ``shape_buckets``,
``cuda_graphs``, ``torch_dtype`` (larr.contract).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from larr.choices import ChoiceEnum
from larr.contract import PARAM_CUDA_GRAPHS, PARAM_SHAPE_BUCKETS, PARAM_TORCH_DTYPE
from larr.serving.buckets import Bucket, BucketGrid, Shapes

WARMUP_RUNS = 3  # before a capture: lazy initialisation (cuBLAS handles, autotuning) must not be captured


class TorchDtype(ChoiceEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"

    @classmethod
    def choice_name(cls) -> str:
        return PARAM_TORCH_DTYPE

    @property
    def torch(self) -> torch.dtype:
        return torch.bfloat16 if self is TorchDtype.BFLOAT16 else torch.float32


@dataclass(frozen=True)
class GraphSettings:
    """What the model config asks of the bucketed torch runtime; ``from_params`` gives None without ``shape_buckets``."""

    grid: BucketGrid
    capture: bool  # CUDA graphs per bucket: only on a CUDA device
    dtype: TorchDtype = TorchDtype.FLOAT32

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", TorchDtype.parse(self.dtype))

    @classmethod
    def from_params(cls, params: Mapping[str, str], device: str) -> GraphSettings | None:
        raw = params.get(PARAM_SHAPE_BUCKETS, "")
        if not raw:
            return None
        cuda = device.startswith("cuda")
        flag = params.get(PARAM_CUDA_GRAPHS, "true").strip().lower()
        if flag not in ("true", "false"):
            raise ValueError(f"{PARAM_CUDA_GRAPHS} must be 'true' or 'false', got {flag!r}")
        default_dtype = TorchDtype.BFLOAT16 if cuda else TorchDtype.FLOAT32
        return cls(grid=BucketGrid.parse(raw), capture=cuda and flag == "true",
                   dtype=params.get(PARAM_TORCH_DTYPE, default_dtype))


@dataclass
class CapturedGraph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # the static inputs every replay reads
    output: torch.Tensor  # the static output every replay overwrites


class BucketedModule:
    """``module`` called on NumPy inputs padded to ``settings.grid``'s buckets as ``shapes`` says; see the module doc."""

    def __init__(self, module: torch.nn.Module, shapes: Shapes, settings: GraphSettings, device: str):
        self.module = module.to(device=device, dtype=settings.dtype.torch).eval()
        self.shapes = shapes
        self.settings = settings
        self.device = torch.device(device)
        self.graphs: dict[Bucket, CapturedGraph] = {}
        self.eager_calls = 0  # calls beyond the grid's largest bucket, run unpadded (a counter)
        if settings.capture:
            pool = torch.cuda.graph_pool_handle()
            for bucket in shapes.buckets(settings.grid):
                self.graphs[bucket] = self._capture(bucket, pool)

    def __call__(self, inputs: Sequence[Any]) -> torch.Tensor:
        arrays = [x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
        bucket = self.shapes.bucket(arrays, self.settings.grid)
        if bucket is None:
            self.eager_calls += 1
            return self._forward(self._tensors(arrays)).float()
        padded = self.shapes.pad(arrays, bucket)
        captured = self.graphs.get(bucket)
        if captured is None:  # CPU, or capture off: the same padding, an eager forward
            output = self._forward(self._tensors(padded))
        else:
            for static, value in zip(captured.inputs, padded):
                static.copy_(torch.from_numpy(value))  # casts a float input to the static buffer's dtype
            captured.graph.replay()
            output = captured.output
        # a copy: the next replay overwrites the static output while Triton may still hold this one
        return self.shapes.unpad(output, arrays).to(torch.float32, copy=True)

    def _tensors(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
        return [t.to(self.settings.dtype.torch) if t.is_floating_point() else t for t in tensors]

    def _forward(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(*tensors)

    def _capture(self, bucket: Bucket, pool: Any) -> CapturedGraph:
        """One CUDA graph for ``bucket``: warm-up runs on a side stream (as torch.cuda.graphs' docs ask), then the
        capture of one forward over static inputs."""
        static = self._tensors(self.shapes.example(bucket))
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(WARMUP_RUNS):
                self.module(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=pool):  # no_grad: the static output stays a plain tensor
            output = self.module(*static)
        return CapturedGraph(graph, static, output)
