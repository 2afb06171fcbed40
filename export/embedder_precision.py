"""The served embedder graph in another precision: int8 dynamic quantisation for CPU, fp16 for GPU.

    from larr.export.embedder_precision import EmbedderPrecision, convert_embedder

    convert_embedder("out/model.fp32.onnx", "out/model.onnx", EmbedderPrecision.INT8)   # CPU, VNNI/AVX2
    larr export --checkpoints runs/tiny --out model_repository --embedder-precision int8

Every variant starts from the parity-checked fp32 graph of :func:`larr.export.onnx_export.export_embedder`
and keeps its contract: ``(input_ids, attention_mask) (B, T) int64 -> embedding (B, D) float32``.

Why ONNX Runtime's own tools and not Hugging Face Optimum (DESIGN §2 names Optimum): Optimum's
``ORTQuantizer`` and ``ORTOptimizer`` wrap exactly these functions, but with this project's
transformers 5.24 they cannot be imported. Measured with ``optimum==2.1.0`` + ``optimum-onnx==0.1.0``
(the newest optimum-onnx; it pins ``transformers<4.58``), onnxruntime 1.32, on 2026-11-29:

* ``from optimum.onnxruntime import ORTQuantizer`` -> ``ImportError: cannot import name 'is_offline_mode'
  from 'transformers.utils'`` (optimum/onnxruntime/modeling.py:65);
* ``from optimum.onnxruntime import ORTOptimizer`` -> ``ImportError: cannot import name
  '_CAN_RECORD_REGISTRY' from 'transformers.utils.generic'`` (optimum/exporters/onnx/_traceable_decorator.py:18);
* only ``optimum.onnxruntime.configuration`` (``AutoQuantizationConfig``) imports.

Downgrading transformers would break the training code and its checkpoints, so the recipe below is
Optimum's ``AutoQuantizationConfig.avx512_vnni(is_static=False)`` spelled out for
``onnxruntime.quantization.quantize_dynamic`` (the call ``ORTQuantizer.quantize`` makes). The graph
itself still comes from ``torch.onnx.export``: Optimum's exporter would need the same transformers,
and the pooled embedder (last-token gather + MLP + L2 norm inside the graph) needs a custom ONNX config
there anyway.

int8 (:func:`quantize_int8`), measured on the SmolLM-135M-shaped embedder (benchmarks/studies/
embedder-cost/results/): weights int8 symmetric per output channel, activations uint8 asymmetric per
tensor, computed per batch at run time (``DynamicQuantizeLinear`` -> ``MatMulInteger``: u8 x s8, the
VNNI ``VPDPBUSD`` path; on a host without VNNI the weights take 7 bits, :func:`int8_reduce_range`). Only MatMuls with a constant weight are quantised:
the attention's activation x activation MatMuls (Q K^T, softmax x V) stay fp32 -- quantising the softmax
probabilities to uint8 costs accuracy and saves little. The MLP down-projections stay fp32 too: their
input (``silu(gate) * up``) has the widest range of any MatMul input, and one per-tensor scale over it
was the largest error (mean cosine to fp32 0.9986 with them quantised, 0.9991 without, over 30 layers).
The pooling head (a Gemm, the projection MLP) stays fp32. Per-tensor activation scales are taken over
the whole batch, so an int8 embedding depends slightly (within the parity bound) on its batch-mates.

fp16 (:func:`convert_fp16`): weights and activations fp16 for ONNX Runtime's CUDA provider; the graph's
inputs and output keep their types (``keep_io_types``), so configs and clients do not change. ONNX
Runtime 1.32's CPU provider runs the graph too (parity is checked there at export), without speed-up:
it is the GPU option (``--device cuda``); TensorRT (``--target gpu``) builds its own FP16 engine from fp32.

Optimised fp32 (:func:`fuse_transformer_ops`): ONNX Runtime's transformer optimiser (what ``ORTOptimizer``
runs) fuses RMSNorm + residual adds into ``SkipSimplifiedLayerNormalization``; it finds no attention
fusion in this Llama export (grouped-query attention, eager masking). Measured beside int8 in the
benchmark; not an export option, since the session's own graph optimisations already do most of it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from larr.choices import ChoiceEnum

if TYPE_CHECKING:
    import onnx

# onnx, onnxruntime and larr.export.onnx_export (torch) are imported where used: ``larr export`` parses
# its flags (EmbedderPrecision) before anything heavy is imported.

log = logging.getLogger(__name__)

# MatMuls whose name contains one of these keep fp32 weights (why: module docstring, measured).
INT8_FP32_MATMULS = ("down_proj",)
# Parity of a converted graph to the fp32 one, checked at export on the check batch (larr.export.onnx_export)
# and measured on held-out texts by benchmarks/studies/embedder-cost/embedder_precision.py. Embeddings are unit vectors, so
# cosine = 1 - |a - b|^2 / 2: a mean cosine of 0.999 is an RMS distance of 0.045.
MIN_MEAN_COSINE = 0.999
# One text may fall further (a batch with a wide activation range); below this the export is refused.
MIN_COSINE = 0.99


class EmbedderPrecision(ChoiceEnum):
    """What the served embedder graph computes in (``larr export --embedder-precision``)."""

    FP32 = "fp32"  # the parity-checked torch.onnx export, as is
    INT8 = "int8"  # CPU: dynamic int8 weight MatMuls (quantize_int8)
    FP16 = "fp16"  # GPU (ONNX Runtime CUDA): fp16 weights and activations, fp32 in/out (convert_fp16)

    @classmethod
    def choice_name(cls) -> str:
        return "embedder precision"


class PrecisionParityError(RuntimeError):
    """A converted embedder graph is further from the fp32 graph than the parity bound allows."""


def weight_matmuls(model: "onnx.ModelProto", exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant (a weight), minus names containing ``exclude``."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {node.output[0] for node in model.graph.node if node.op_type == "Constant"}
    return [
        node.name for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in constants and not any(part in node.name for part in exclude)
    ]


VNNI_FLAGS = ("avx512_vnni", "avx_vnni")  # /proc/cpuinfo flags of the u8 x s8 dot-product instructions


def host_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when this CPU has a VNNI dot product (AVX-512 VNNI or AVX-VNNI); False without, or without /proc."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in VNNI_FLAGS)


def int8_reduce_range(vnni: bool) -> bool:
    """Whether weights are quantised to 7 bits instead of 8. Without VNNI, ONNX Runtime's AVX2 u8 x s8 kernels
    add products pairwise into int16 with saturation (``VPMADDUBSW``), which full-range weights overflow: on such
    a host the tiny run's int8 embedder fell to a mean cosine of 0.9978 to fp32 (bound 0.999) with 8-bit weights
    and met the bound with 7-bit ones. VNNI accumulates in int32 and keeps the full 8 bits."""
    return not vnni


def quantize_int8(fp32_onnx: str | Path, out_path: str | Path, exclude: tuple[str, ...] = INT8_FP32_MATMULS,
                  vnni: bool | None = None) -> Path:
    """fp32 embedder graph -> int8 dynamic quantisation of its weight MatMuls but those named by ``exclude``
    (recipe: module docstring), for the integer path of the CPU it will run on: ``vnni`` (default: this host's,
    :func:`host_has_vnni`) picks 8-bit or 7-bit weights (:func:`int8_reduce_range`). Export on the CPU type that
    serves it, as TensorRT engines are built on the GPU type that serves them."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    nodes = weight_matmuls(onnx.load(str(fp32_onnx), load_external_data=False), exclude=exclude)
    if not nodes:
        raise ValueError(f"{fp32_onnx}: no MatMul with a constant weight to quantise")
    reduce_range = int8_reduce_range(host_has_vnni() if vnni is None else vnni)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        fp32_onnx, out_path,
        op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
        per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,  # s8 weights
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        use_external_data_format=_needs_external_data(fp32_onnx),
    )
    log.info("%s: int8 dynamic quantisation of %d weight MatMuls (%d-bit weights)", out_path, len(nodes),
             7 if reduce_range else 8)
    return out_path


def convert_fp16(fp32_onnx: str | Path, out_path: str | Path) -> Path:
    """fp32 embedder graph -> fp16 weights and activations; inputs and output keep their types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from larr.export.onnx_export import save_onnx

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    model = convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=True)
    save_onnx(model, out_path, _needs_external_data(fp32_onnx))
    return out_path


def fuse_transformer_ops(fp32_onnx: str | Path, out_path: str | Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer optimiser over the fp32 graph (fusions only: the result stays fp32)."""
    from onnxruntime.transformers.optimizer import optimize_model

    from larr.export.onnx_export import save_onnx

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    # "bert" is the optimiser's generic encoder pass set; opt_level 0: graph fusions in Python only, no
    # ONNX Runtime session pass baked in (the serving session applies its own at load)
    optimized = optimize_model(str(fp32_onnx), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0)
    log.info("%s: fused %s", out_path, {k: v for k, v in optimized.get_fused_operator_statistics().items() if v})
    save_onnx(optimized.model, out_path, _needs_external_data(fp32_onnx))
    return out_path


def convert_embedder(fp32_onnx: str | Path, out_path: str | Path, precision: EmbedderPrecision | str) -> Path:
    """``precision``'s graph of the fp32 embedder at ``fp32_onnx``, written to ``out_path`` (fp32: a copy)."""
    import onnx

    from larr.export.onnx_export import save_onnx

    precision = EmbedderPrecision.parse(precision)
    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    if precision is EmbedderPrecision.INT8:
        return quantize_int8(fp32_onnx, out_path)
    if precision is EmbedderPrecision.FP16:
        return convert_fp16(fp32_onnx, out_path)
    save_onnx(onnx.load(str(fp32_onnx)), out_path, _needs_external_data(fp32_onnx))
    return out_path


def export_embedder_at(embedder_dir: str | Path, out_path: str | Path, precision: EmbedderPrecision | str) -> Path:
    """TextEmbedder dir -> the served graph in ``precision`` at ``out_path``, parity-checked against fp32.

    The fp32 graph is exported (and checked against PyTorch) in a scratch folder, converted, and the
    converted graph's embeddings of a right-padded check batch compared with the fp32 graph's
    (:func:`require_parity`, on ONNX Runtime's CPU provider).
    """
    import onnx

    from larr.export.onnx_export import EMBEDDER_INPUTS, embedder_example, export_embedder

    precision = EmbedderPrecision.parse(precision)
    out_path = Path(out_path)
    if precision is EmbedderPrecision.FP32:
        return export_embedder(embedder_dir, out_path)
    with tempfile.TemporaryDirectory(prefix="larr-embedder-fp32-") as scratch:
        fp32_onnx = export_embedder(embedder_dir, Path(scratch) / "model.onnx")
        convert_embedder(fp32_onnx, out_path, precision)
        onnx.checker.check_model(str(out_path))
        # 16 right-padded rows of random ids (B, T) = (16, 12): a shape other than the trace's
        check = dict(zip(EMBEDDER_INPUTS, (t.numpy() for t in embedder_example(_vocab_size(fp32_onnx), 16, 12))))
        require_parity(out_path, cosines(fp32_onnx, out_path, check))
    return out_path


def cosines(reference_onnx: str | Path, candidate_onnx: str | Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Per-row cosine ``(B,)`` between two embedder graphs' outputs for the same ``(B, T)`` inputs (ONNX Runtime, CPU)."""
    from larr.export.onnx_export import run_onnx

    (reference,) = run_onnx(reference_onnx, feeds)  # (B, D)
    (candidate,) = run_onnx(candidate_onnx, feeds)  # (B, D)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return (reference * candidate).sum(axis=1) / np.maximum(norms, 1e-12)


def require_parity(path: Path, row_cosines: np.ndarray) -> None:
    """Raise :class:`PrecisionParityError` unless the mean cosine >= MIN_MEAN_COSINE and every row >= MIN_COSINE."""
    mean, worst = float(row_cosines.mean()), float(row_cosines.min())
    if not (mean >= MIN_MEAN_COSINE and worst >= MIN_COSINE):  # also catches NaN
        raise PrecisionParityError(
            f"{path}: cosine to the fp32 embedder mean {mean:.5f} (bound {MIN_MEAN_COSINE}), worst {worst:.5f} "
            f"(bound {MIN_COSINE}) on the check batch"
        )
    log.info("%s: cosine to fp32 mean %.5f, worst %.5f", path.name, mean, worst)


def _vocab_size(fp32_onnx: Path) -> int:
    """Rows of the token embedding table: the Gather over ``input_ids`` reads them."""
    import onnx

    model = onnx.load(str(fp32_onnx), load_external_data=False)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] == "input_ids" and node.input[0] in shapes:
            return int(shapes[node.input[0]][0])
    raise ValueError(f"{fp32_onnx}: no embedding Gather over input_ids")


def _needs_external_data(onnx_path: Path) -> bool:
    from larr.export.onnx_export import external_data_path

    return external_data_path(onnx_path).exists()


__all__ = [
    "INT8_FP32_MATMULS",
    "MIN_COSINE",
    "MIN_MEAN_COSINE",
    "EmbedderPrecision",
    "PrecisionParityError",
    "convert_embedder",
    "convert_fp16",
    "cosines",
    "export_embedder_at",
    "fuse_transformer_ops",
    "quantize_int8",
    "weight_matmuls",
]
