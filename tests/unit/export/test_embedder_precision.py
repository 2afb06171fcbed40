"""int8 / fp16 / fused exports of the tiny trained embedder against PyTorch, and the precision option's errors.

The references are computed independently: the PyTorch TextEmbedder (fp32) on the same tokenised
texts of the tiny run's test split, never the graph under test.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from larr.data.schema import load_dataset
from larr.export.cli import main as export_main
from larr.export.embedder_precision import (
    INT8_FP32_MATMULS,
    MIN_COSINE,
    MIN_MEAN_COSINE,
    EmbedderPrecision,
    PrecisionParityError,
    export_embedder_at,
    fuse_transformer_ops,
    host_has_vnni,
    quantize_int8,
    require_parity,
    weight_matmuls,
)
from larr.export.onnx_export import load_embedder_for_export, run_onnx
from larr.export.repository import RepositoryOptions
from larr.export.scene_table import SceneTableOptions, write_scene_table
from larr.serving.stores.table import TABLE_TENSOR
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer


@pytest.fixture(scope="module")
def held_out(tiny_run) -> dict[str, np.ndarray]:
    """Tokenised distinct test-split scene texts: ``input_ids``/``attention_mask`` (N, T) int64."""
    dataset = load_dataset(tiny_run.data_dir)
    features = dataset.info.scene_features
    texts = sorted({format_scene_feature(features[k], text) for k, column in enumerate(dataset.splits["test"].scene)
                    for text in column})[:256]
    input_ids, attention_mask = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)(texts)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture(scope="module")
def pytorch_vectors(tiny_run, held_out) -> np.ndarray:
    embedder = load_embedder_for_export(tiny_run.embedder_dir)
    with torch.no_grad():
        return embedder(*(torch.from_numpy(held_out[name]) for name in ("input_ids", "attention_mask"))).numpy()  # (N, D)


@pytest.fixture(scope="module")
def graphs(tiny_run, tmp_path_factory) -> dict[EmbedderPrecision, object]:
    out = tmp_path_factory.mktemp("precision")
    return {p: export_embedder_at(tiny_run.embedder_dir, out / f"{p}.onnx", p) for p in EmbedderPrecision}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("precision", [EmbedderPrecision.INT8, EmbedderPrecision.FP16])
def test_converted_embedder_matches_pytorch_within_the_parity_bound(graphs, held_out, pytorch_vectors, precision):
    (served,) = run_onnx(graphs[precision], held_out)
    assert served.dtype == np.float32 and served.shape == pytorch_vectors.shape
    cosine = cosine_rows(served, pytorch_vectors)
    assert cosine.mean() >= MIN_MEAN_COSINE and cosine.min() >= MIN_COSINE
    assert not np.allclose(served, pytorch_vectors, atol=1e-6)  # it is another graph, not the fp32 one


def test_int8_graph_quantises_the_weight_matmuls_but_the_down_projections(graphs):
    fp32 = onnx.load(str(graphs[EmbedderPrecision.FP32]))
    int8 = onnx.load(str(graphs[EmbedderPrecision.INT8]))
    quantised = weight_matmuls(fp32, exclude=INT8_FP32_MATMULS)
    kept = [name for name in weight_matmuls(fp32) if name not in quantised]
    assert kept and all("down_proj" in name for name in kept)
    ops = [node.op_type for node in int8.graph.node]
    assert ops.count("MatMulInteger") == len(quantised)
    assert {node.name for node in int8.graph.node if node.op_type == "MatMul"} >= set(kept)


def test_fp16_graph_keeps_the_contract_dtypes(graphs):
    model = onnx.load(str(graphs[EmbedderPrecision.FP16]))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64] * 2
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    floats = [init.data_type for init in model.graph.initializer if init.data_type in (onnx.TensorProto.FLOAT,
                                                                                       onnx.TensorProto.FLOAT16)]
    assert floats.count(onnx.TensorProto.FLOAT16) > floats.count(onnx.TensorProto.FLOAT)


def test_fused_fp32_graph_equals_pytorch(tiny_run, graphs, held_out, pytorch_vectors, tmp_path):
    fused = fuse_transformer_ops(graphs[EmbedderPrecision.FP32], tmp_path / "fused.onnx", num_heads=4, hidden_size=128)
    assert any(node.op_type == "SkipSimplifiedLayerNormalization" for node in onnx.load(str(fused)).graph.node)
    (served,) = run_onnx(fused, held_out)
    np.testing.assert_allclose(served, pytorch_vectors, atol=1e-4, rtol=0)


def test_parity_check_refuses_a_graph_outside_the_bound(tmp_path):
    require_parity(tmp_path / "ok.onnx", np.full(8, MIN_MEAN_COSINE + 1e-4))
    with pytest.raises(PrecisionParityError, match="mean 0.99800"):
        require_parity(tmp_path / "bad.onnx", np.full(8, 0.998))
    with pytest.raises(PrecisionParityError, match="worst"):
        require_parity(tmp_path / "nan.onnx", np.array([1.0, np.nan]))


def test_scene_table_of_an_int8_embedder_holds_the_int8_graphs_rows(tiny_run, graphs, tmp_path):
    from safetensors.numpy import load_file

    out = tmp_path / "table"
    options = SceneTableOptions(batch_size=33, progress=False, measure_peak=False)
    write_scene_table(tiny_run.embedder_dir, tiny_run.data_dir, out, "v-int8", options=options,
                      embedder_onnx=graphs[EmbedderPrecision.INT8])
    index = json.loads((out / "scene_table.json").read_text(encoding="utf-8"))
    rows = load_file(str(out / "scene_table.safetensors"))[TABLE_TENSOR]  # (N, D)
    features = index["features"]
    picks = [0, len(rows) // 2, len(rows) - 1]
    texts = [format_scene_feature(features[index["keys"][i][0]], index["keys"][i][1]) for i in picks]
    input_ids, attention_mask = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)(texts)
    (expected,) = run_onnx(graphs[EmbedderPrecision.INT8], {"input_ids": input_ids, "attention_mask": attention_mask})
    # per-tensor activation scales depend on the batch: same graph, other batch-mates -> within the parity bound
    assert cosine_rows(rows[picks], expected).min() >= MIN_COSINE
    fp32 = run_onnx(graphs[EmbedderPrecision.FP32], {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    assert np.abs(rows[picks] - fp32).max() > 1e-6  # the int8 graph's rows, not fp32 PyTorch's


def test_bad_precision_fails_with_a_clear_error(capsys, tmp_path):
    with pytest.raises(ValueError, match=r"unknown embedder precision 'int4': one of 'fp32', 'int8', 'fp16'"):
        RepositoryOptions(embedder_precision="int4")
    with pytest.raises(ValueError, match="TensorRT FP16 engines"):
        RepositoryOptions(target="gpu", embedder_precision="int8")
    with pytest.raises(ValueError, match="--runtime torch"):
        RepositoryOptions(runtime="torch", embedder_precision="fp16")
    assert RepositoryOptions(embedder_precision="int8").embedder_precision is EmbedderPrecision.INT8
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoints", str(tmp_path), "--out", str(tmp_path / "r"), "--target", "cpu",
                     "--embedder-precision", "int4"])
    assert exit_info.value.code == 2
    assert "--embedder-precision: invalid choice: 'int4'" in capsys.readouterr().err


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n")
    assert host_has_vnni(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert not host_has_vnni(cpuinfo)
    assert not host_has_vnni(tmp_path / "absent")


@pytest.mark.parametrize("vnni, widest", [(True, 127), (False, 64)])
def test_int8_weights_take_7_bits_for_a_host_without_vnni(graphs, tmp_path, vnni, widest):
    """Per-channel symmetric weights: the widest value of a channel maps to the edge of the range, 127 for 8 bits
    and 63/64 for ONNX Runtime's 7-bit reduce_range (which AVX2's saturating u8 x s8 pair sums need)."""
    from onnx import numpy_helper

    graph = onnx.load(str(quantize_int8(graphs[EmbedderPrecision.FP32], tmp_path / "int8.onnx", vnni=vnni)))
    weights = [numpy_helper.to_array(init) for init in graph.graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == widest
