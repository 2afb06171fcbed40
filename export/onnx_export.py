"""Export the trained text embedder and the serving CTR model to ONNX (opset 17, fp32).

    from larr.export.onnx_export import export_ctr, export_embedder

    export_embedder("runs/tiny/embed/model", "out/embedder.onnx")                   # (B, T) ids -> (B, D)
    export_ctr("runs/tiny/ctr/larr", num_users=400, num_items=192, out_path="out/ctr.onnx")

``larr export`` (larr.export.cli) calls these for the model repository.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False, dynamic_axes=...)``. The dynamo
exporter (``dynamo=True``) needs ``onnxscript``, which this environment does not ship (it fails with
``ModuleNotFoundError: onnxscript`` before tracing), and DESIGN §2 records a duplicate-value-name
failure with it for the same kind of Llama model. Measured with the TorchScript export (torch 2.13,
transformers 5.23, ONNX Runtime 1.32, CPU), max |ONNX Runtime - PyTorch| on dataset texts/ids:
2.9e-7 for the embedder (batches 1-64, sequences 8-40; the trace used 2 x 8), 1.2e-7 for the CTR
model (N = 1, 100, 1000 candidates, ids out of range included; the trace used N = 3); a 557M-parameter
(2.2 GB) Llama-shaped embedder exported with external data in 72 s, 7 GB peak RSS, to 2.7e-7.

Choices that matter for correctness:

* The encoder is loaded with ``attn_implementation="eager"`` and ``use_cache=False``. SDPA exports too
  (same parity), but eager attention is an explicit MatMul -> Softmax -> MatMul chain with an additive
  mask built from *our* ``attention_mask`` input on every path, which TensorRT's FP32 Softmax
  constraint (larr.export.tensorrt_build) can find, and which cannot depend on whether the trace
  example happened to contain padding. Without ``use_cache=False`` the trace builds a KV cache that
  is pruned again only because nothing reads it.
* The trace example is right padded (two rows of different length) so the masking path is traced.
* Everything after the encoder -- the last-token gather, the projection MLP, the L2 normalisation --
  is inside the graph: the server sends token ids and receives unit vectors.
* Graphs whose weights exceed what one protobuf can hold (2 GiB; e.g. a 0.5B-parameter fp32 LLM) are
  written as ``model.onnx`` + ``model.onnx.data`` (ONNX external data, one file). ONNX Runtime and
  TensorRT's ONNX parser find the data file next to the graph.
* The exporter's shape inference leaves the embedding's D symbolic ("Divembedding_dim_1"); output
  shapes are restated (``(batch, D)``, ``(candidates,)``) so Triton and TensorRT see a static D.
* ``export_ctr`` keeps ``SCENE_EMB`` as a graph input even for the ID-only model (which does not read
  it; the exporter drops unused inputs, so it is added back): every CTR graph has the same inputs and
  the ensemble contract does not depend on the variant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from larr.contract import (
    ATTENTION_MASK,
    CTR,
    EMBEDDING,
    INPUT_IDS,
    ITEM_IDS,
    ITEM_REQUEST,
    SCENE_EMB,
    SCENE_IDS,
    USER_ID,
)
from larr.models.ctr_model import BatchedServingCTR, LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXTERNAL_DATA_SUFFIX = ".data"  # model.onnx -> model.onnx.data
# A protobuf message cannot exceed 2 GiB; switch to external data with room to spare for the graph itself.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
PARITY_ATOL = 1e-4  # export-time self-check, fp32 ONNX Runtime vs PyTorch
EMBEDDER_INPUTS = (INPUT_IDS, ATTENTION_MASK)
EMBEDDER_OUTPUTS = (EMBEDDING,)
CTR_INPUTS = (SCENE_EMB, SCENE_IDS, USER_ID, ITEM_IDS)
BATCHED_CTR_INPUTS = (*CTR_INPUTS, ITEM_REQUEST)  # the python-backend ctr: one run per dynamic batch
CTR_OUTPUTS = (CTR,)
_BATCH, _SEQUENCE, _CANDIDATES, _REQUESTS = "batch", "sequence", "candidates", "requests"


class ExportError(RuntimeError):
    """An export produced a graph that does not reproduce the PyTorch model, or could not be written."""


# --------------------------------------------------------------------------------------------- embedder


def load_embedder_for_export(embedder_dir: str | Path, attn_implementation: str = "eager") -> TextEmbedder:
    """The TextEmbedder in fp32 eval mode, eager attention (what the ONNX graph traces; see the module docstring)
    unless told otherwise, no KV cache."""
    embedder = TextEmbedder.from_pretrained(embedder_dir, attn_implementation=attn_implementation, dtype=torch.float32)
    embedder.encoder.config.use_cache = False
    return embedder.float().eval()


def embedder_example(vocab_size: int, batch: int = 2, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded trace/check inputs ``(B, T)`` int64: row ``b`` has ``T - b`` real tokens (row 0 none padded)."""
    generator = torch.Generator().manual_seed(batch * 1000 + length)
    input_ids = torch.randint(0, vocab_size, (batch, length), generator=generator)  # (B, T)
    lengths = torch.clamp(length - torch.arange(batch), min=1)  # (B,)
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
    return input_ids * attention_mask, attention_mask


def export_embedder(
    embedder_dir: str | Path,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    *,
    external_data: bool | None = None,
    verify: bool = True,
) -> Path:
    """TextEmbedder dir -> ONNX ``(input_ids, attention_mask) (B, T) int64 -> embedding (B, D) float32``.

    ``B`` and ``T`` are dynamic; inputs are right padded (larr.tokenization). ``external_data=None``
    writes weights to ``<out_path>.data`` only when they exceed the protobuf limit; True/False force
    it. ``verify`` runs ONNX Runtime once at a shape other than the trace example's and raises
    :class:`ExportError` when it differs from PyTorch by more than ``PARITY_ATOL``.
    """
    out_path = Path(out_path)
    embedder = load_embedder_for_export(embedder_dir)
    example = embedder_example(embedder.encoder.config.vocab_size)
    text_axes = {0: _BATCH, 1: _SEQUENCE}
    dynamic_axes = {INPUT_IDS: text_axes, ATTENTION_MASK: text_axes, EMBEDDING: {0: _BATCH}}
    output_dims = {EMBEDDING: [_BATCH, embedder.output_dim]}
    _export(embedder, example, EMBEDDER_INPUTS, EMBEDDER_OUTPUTS, dynamic_axes, output_dims, out_path, opset,
            external_data)
    if verify:
        check = embedder_example(embedder.encoder.config.vocab_size, batch=3, length=11)
        diff = max_abs_diff(embedder, out_path, {name: t.numpy() for name, t in zip(EMBEDDER_INPUTS, check)})
        _require_parity(out_path, diff)
    return out_path


# --------------------------------------------------------------------------------------------- CTR


def load_serving_ctr(ctr_dir: str | Path, num_users: int, num_items: int) -> ServingCTR:
    """``ServingCTR`` with the raw-id -> field-index tables for ids ``0..num_users-1`` / ``0..num_items-1``."""
    model, vocab = LarrCTR.load(Path(ctr_dir))
    user_index = index_table(vocab["values"][0], num_users)
    item_index = index_table(vocab["values"][1], num_items)
    return ServingCTR(model, user_index, item_index).eval()


def ctr_input_shapes(model: LarrCTR, scene_dim: int | None = None) -> dict[str, tuple[int, ...]]:
    """Static shapes of the CTR graph's inputs; ``ITEM_IDS`` is dynamic (given here as 0).

    ``SCENE_EMB`` is ``(K', D)``: K' = the model's LLM features (K, or 1 for a whole-scene variant).
    The ID-only model has no D of its own: ``scene_dim`` (the embedder's output size) gives it.
    """
    scene_fields = len(model.spec.field_names) - 2  # [user, item, *scene features]
    if model.spec.use_llm:
        if scene_dim is not None and scene_dim != model.spec.llm_dim:
            raise ValueError(f"scene_dim {scene_dim} differs from the CTR model's llm_dim {model.spec.llm_dim}")
        scene_emb = (model.spec.llm_features, model.spec.llm_dim)
    else:
        if scene_dim is None:
            raise ValueError(
                f"the {model.spec.variant!r} CTR model reads no scene embeddings, so it cannot tell their size: "
                "pass scene_dim (the embedder's output dimension) to keep SCENE_EMB in the graph's inputs"
            )
        scene_emb = (scene_fields, scene_dim)
    return {SCENE_EMB: scene_emb, SCENE_IDS: (scene_fields,), USER_ID: (1,), ITEM_IDS: (0,)}


def ctr_example(shapes: dict[str, tuple[int, ...]], candidates: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for tracing and checks: random scene, scene ids 0..K-1, user 0, items ``-1 .. candidates-2``."""
    rng = np.random.default_rng(seed)
    scene = rng.standard_normal(shapes[SCENE_EMB]).astype(np.float32)
    scene /= np.linalg.norm(scene, axis=-1, keepdims=True)  # unit vectors, like the embedder's
    return {
        SCENE_EMB: scene,
        SCENE_IDS: np.arange(shapes[SCENE_IDS][0], dtype=np.int64),
        USER_ID: np.zeros(1, dtype=np.int64),
        ITEM_IDS: np.arange(-1, candidates - 1, dtype=np.int64),  # -1: the out-of-range path is traced
    }


def batched_ctr_example(shapes: dict[str, tuple[int, ...]], candidates: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the batched graph: ``len(candidates)`` requests, request ``b`` with ``candidates[b]`` items."""
    requests = [ctr_example(shapes, n, seed=seed + b) for b, n in enumerate(candidates)]
    return {
        SCENE_EMB: np.stack([r[SCENE_EMB] for r in requests]),  # (B, K', D)
        SCENE_IDS: np.stack([(r[SCENE_IDS] + b) % (shapes[SCENE_IDS][0] + 1) for b, r in enumerate(requests)]),  # (B, K)
        USER_ID: np.arange(len(candidates), dtype=np.int64)[:, None],  # (B, 1)
        ITEM_IDS: np.concatenate([r[ITEM_IDS] for r in requests]),  # (T,)
        ITEM_REQUEST: np.repeat(np.arange(len(candidates), dtype=np.int64), candidates),  # (T,)
    }


def export_ctr(
    ctr_dir: str | Path,
    num_users: int,
    num_items: int,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    *,
    scene_dim: int | None = None,
    batched: bool = False,
    verify: bool = True,
) -> Path:
    """LarrCTR dir -> ONNX of one request: ``SCENE_EMB (K', D) f32, SCENE_IDS (K,) i64, USER_ID (1,) i64,
    ITEM_IDS (N,) i64 -> CTR (N,) f32``, N dynamic, K and D fixed by the model.

    ``batched=True`` writes the graph of :class:`~larr.models.ctr_model.BatchedServingCTR` instead: B
    requests and T candidates in all, ``SCENE_EMB (B, K', D), SCENE_IDS (B, K), USER_ID (B, 1), ITEM_IDS (T,),
    ITEM_REQUEST (T,) -> CTR (T,)`` (B and T dynamic) — one run scores a whole dynamic batch.

    Raw ids are mapped by tables baked into the graph; ids outside ``[0, num_users)`` / ``[0, num_items)``
    (negative ones included) read the unseen row 0, never out of range. ``scene_dim``: see
    :func:`ctr_input_shapes` (needed only for the ID-only model).
    """
    out_path = Path(out_path)
    serving = load_serving_ctr(ctr_dir, num_users, num_items)
    shapes = ctr_input_shapes(serving.model, scene_dim)
    if batched:
        serving = BatchedServingCTR(serving.model, serving.user_index, serving.item_index).eval()
        names = BATCHED_CTR_INPUTS
        example = batched_ctr_example(shapes, candidates=(3, 2))
        per_request = {0: _REQUESTS}
        dynamic_axes = {SCENE_EMB: per_request, SCENE_IDS: per_request, USER_ID: per_request,
                        ITEM_IDS: {0: _CANDIDATES}, ITEM_REQUEST: {0: _CANDIDATES}, CTR: {0: _CANDIDATES}}
        graph_shapes = {SCENE_EMB: (_REQUESTS, *shapes[SCENE_EMB]), SCENE_IDS: (_REQUESTS, *shapes[SCENE_IDS])}
    else:
        names = CTR_INPUTS
        example = ctr_example(shapes, candidates=3)
        dynamic_axes = {ITEM_IDS: {0: _CANDIDATES}, CTR: {0: _CANDIDATES}}
        graph_shapes = shapes
    traced_args = tuple(torch.from_numpy(example[name]) for name in names)
    output_dims = {CTR: [_CANDIDATES]}
    _export(serving, traced_args, names, CTR_OUTPUTS, dynamic_axes, output_dims, out_path, opset,
            external_data=False)
    _restore_unused_inputs(out_path, graph_shapes, names)
    if verify:
        if batched:
            check = batched_ctr_example(shapes, candidates=(17, 1, 5), seed=1)
        else:
            check = ctr_example(shapes, candidates=17, seed=1)
        _require_parity(out_path, max_abs_diff(serving, out_path, check))
    return out_path


def _restore_unused_inputs(path: Path, shapes: dict[str, tuple[int | str, ...]], names: tuple[str, ...]) -> None:
    """Put back the CTR inputs the exporter pruned (SCENE_EMB of the ID-only model), in contract order."""
    model = onnx.load(str(path))
    present = {value.name: value for value in model.graph.input}
    if set(present) == set(names):
        return
    elem_type = {SCENE_EMB: onnx.TensorProto.FLOAT, SCENE_IDS: onnx.TensorProto.INT64}
    ordered = [
        present.get(name) or onnx.helper.make_tensor_value_info(name, elem_type[name], list(shapes[name]))
        for name in names
    ]
    del model.graph.input[:]
    model.graph.input.extend(ordered)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))


# --------------------------------------------------------------------------------------------- shared


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    output_dims: dict[str, list[int | str]],
    out_path: Path,
    opset: int,
    external_data: bool | None,
) -> None:
    """Trace ``module`` into a scratch folder, then write one graph file (+ one external data file) at ``out_path``.

    ``output_dims`` restates the outputs' shapes (int: fixed, str: a dynamic axis): the exporter's own
    inference leaves e.g. the embedding's D as a symbol ("Divembedding_dim_1"), which TensorRT and the
    Triton config would then have to treat as dynamic.

    The scratch folder matters for large models: the TorchScript exporter writes one file per weight
    next to the graph when the weights exceed 2 GiB; they are gathered into ``<out_path>.data`` here.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="larr-onnx-") as scratch:
        traced = Path(scratch) / out_path.name
        with torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings about Python-level shape checks in transformers: the checks hold for every
            # right-padded input we serve, and the parity checks cover the traced graph at new shapes.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(traced),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(traced), load_external_data=True)
        _set_output_dims(model, output_dims)
        save_onnx(model, out_path, external_data)
    onnx.checker.check_model(str(out_path))  # by path: works for graphs with external data too


def _set_output_dims(model: onnx.ModelProto, output_dims: dict[str, list[int | str]]) -> None:
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        wanted = output_dims[value.name]
        if len(dims) != len(wanted):
            raise ExportError(f"output {value.name!r} has rank {len(dims)}, expected {len(wanted)} ({wanted})")
        for dim, size in zip(dims, wanted):
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


def save_onnx(model: onnx.ModelProto, out_path: Path, external_data: bool | None) -> None:
    """Write one graph file (+ one external data file when ``external_data``, or None and over the protobuf limit)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    external = weight_bytes > EXTERNAL_DATA_THRESHOLD_BYTES if external_data is None else external_data
    data_path = external_data_path(out_path)
    data_path.unlink(missing_ok=True)  # onnx appends to an existing data file; never mix two exports
    if external:
        onnx.save_model(
            model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=data_path.name, size_threshold=1024,
        )
        data_path.chmod(out_path.stat().st_mode & 0o777)  # onnx creates it 0600; the server may run as another user
    else:
        onnx.save_model(model, str(out_path))
    where = f", in {data_path.name}" if external else ""
    log.info("wrote %s (%.1f MB of weights%s)", out_path, weight_bytes / 1e6, where)


def external_data_path(onnx_path: str | Path) -> Path:
    """Where a graph's external weights live: ``model.onnx`` -> ``model.onnx.data``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + EXTERNAL_DATA_SUFFIX)


def onnx_files(onnx_path: str | Path) -> list[Path]:
    """The graph file and, when it has one, its external data file (what to copy or hash)."""
    data = external_data_path(onnx_path)
    return [Path(onnx_path), *([data] if data.exists() else [])]


def onnx_digest(onnx_path: str | Path, length: int = 12) -> str:
    """First ``length`` hex chars of the sha256 over the graph file and its external data file.

    The external data is hashed too: with it, the graph file alone holds no weights, and a retrained
    embedder must get a new version (it keys the feature cache).
    """
    digest = hashlib.sha256()
    for path in onnx_files(onnx_path):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


def run_onnx(onnx_path: str | Path, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Run a graph once on ONNX Runtime's CPU provider; outputs in graph order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    return session.run(None, {name: value for name, value in feeds.items() if name in graph_inputs})


@torch.no_grad()
def max_abs_diff(module: torch.nn.Module, onnx_path: Path, feeds: dict[str, np.ndarray]) -> float:
    """max |ONNX Runtime - PyTorch| of the first output; ``feeds`` are in the module's argument order."""
    expected = module(*(torch.as_tensor(value) for value in feeds.values())).numpy()
    (actual,) = run_onnx(onnx_path, feeds)[:1]
    if actual.shape != expected.shape:
        raise ExportError(f"{onnx_path}: ONNX output shape {actual.shape} differs from PyTorch {expected.shape}")
    return float(np.abs(actual - expected).max()) if actual.size else 0.0


def _require_parity(path: Path, diff: float) -> None:
    if not diff <= PARITY_ATOL:  # also catches NaN
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {PARITY_ATOL}): a wrong export")
    log.info("%s: ONNX Runtime matches PyTorch to %.2g", path.name, diff)


def describe_inputs(onnx_path: str | Path) -> dict[str, list[int | str]]:
    """Graph inputs -> dims (int, or the name of a dynamic axis), for logs and tests."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}


def embedding_dim(embedder_dir: str | Path) -> int:
    """D of a TextEmbedder dir without loading its weights (``embedder.json``)."""
    from larr.models.embedder import EMBEDDER_FILE

    meta = json.loads((Path(embedder_dir) / EMBEDDER_FILE).read_text(encoding="utf-8"))
    return int(meta["projection_dim"] or meta["hidden_size"])


def embedder_vocab_size(embedder_dir: str | Path) -> int:
    """Rows of a TextEmbedder's token-embedding table, without loading its weights: the Hugging Face config's
    ``vocab_size`` (which ``resize_token_embeddings`` keeps equal to the table), so ids in [0, it) can be read."""
    from larr.models.embedder import ENCODER_DIR

    config = json.loads((Path(embedder_dir) / ENCODER_DIR / "config.json").read_text(encoding="utf-8"))
    return int(config["vocab_size"])


def scene_vocab_sizes(ctr_dir: str | Path) -> tuple[int, ...]:
    """Per scene feature, the rows of a trained CTR model's field table (row 0 = unseen), from its spec:
    the fields are [user, item, *scene features]."""
    from larr.models.ctr_model import SPEC_FILE

    spec = json.loads((Path(ctr_dir) / SPEC_FILE).read_text(encoding="utf-8"))
    return tuple(int(size) for size in spec["field_vocab_sizes"][2:])


__all__ = [
    "BATCHED_CTR_INPUTS",
    "CTR_INPUTS",
    "CTR_OUTPUTS",
    "EMBEDDER_INPUTS",
    "EMBEDDER_OUTPUTS",
    "ExportError",
    "ctr_input_shapes",
    "describe_inputs",
    "embedder_vocab_size",
    "embedding_dim",
    "export_ctr",
    "export_embedder",
    "external_data_path",
    "load_embedder_for_export",
    "load_serving_ctr",
    "onnx_digest",
    "onnx_files",
    "run_onnx",
    "save_onnx",
    "scene_vocab_sizes",
]
