"""TensorRT FP16 engines built from the tiny run's ONNX graphs agree with ONNX Runtime (fp32).

Needs the ``tensorrt`` package (>= 10), a CUDA GPU and a CUDA build of torch (device buffers);
without them the whole module is skipped at collection with the reason. Run with ``-m gpu``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from larr.export.tensorrt_build import tensorrt_problem


def _gpu_problem() -> str | None:
    problem = tensorrt_problem()
    if problem is not None:
        return problem
    import torch

    return None if torch.cuda.is_available() else "torch has no CUDA (run_engine uses torch CUDA tensors as buffers)"


_PROBLEM = _gpu_problem()
if _PROBLEM is not None:
    pytest.skip(f"TensorRT engine tests need TensorRT and a CUDA GPU: {_PROBLEM}", allow_module_level=True)

from larr.contract import (  # noqa: E402
    ATTENTION_MASK,
    CTR,
    EMBEDDING,
    INPUT_IDS,
    ITEM_IDS,
    SCENE_EMB,
    SCENE_IDS,
    USER_ID,
)
from larr.data.schema import load_dataset  # noqa: E402
from larr.export.onnx_export import CTR_INPUTS, export_ctr, export_embedder, run_onnx  # noqa: E402
from larr.export.tensorrt_build import build_engine, engine_io_names, run_engine  # noqa: E402
from larr.text import format_item, format_scene_feature  # noqa: E402
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer  # noqa: E402

pytestmark = pytest.mark.gpu

EMBEDDING_ATOL = 2e-2  # FP16 engine vs fp32 ONNX Runtime, unit-norm embeddings
CTR_ATOL = 5e-3  # click probabilities
MAX_BATCH = 32
MAX_CANDIDATES = 256


@pytest.fixture(scope="module")
def dataset(tiny_run):
    return load_dataset(tiny_run.data_dir)


@pytest.fixture(scope="module")
def engines(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt")
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    max_length = EmbeddingInputConfig.load(tiny_run.embedder_dir).max_length
    onnx = {"embedder": export_embedder(tiny_run.embedder_dir, out / "embedder.onnx")}
    dim = json.loads((tiny_run.embedder_dir / "embedder.json").read_text())["projection_dim"]
    for variant in ("larr", "id_only"):
        onnx[variant] = export_ctr(
            tiny_run.ctr_dir(variant), info["num_users"], info["num_items"], out / f"{variant}.onnx", scene_dim=dim
        )
    text_shapes = ((1, 1), (8, 16), (MAX_BATCH, max_length))
    text_profiles = {INPUT_IDS: text_shapes, ATTENTION_MASK: text_shapes}
    plans = {"embedder": build_engine(onnx["embedder"], out / "embedder.plan", text_profiles)}
    candidate_profile = {ITEM_IDS: ((1,), (100,), (MAX_CANDIDATES,))}
    for variant in ("larr", "id_only"):
        plans[variant] = build_engine(onnx[variant], out / f"{variant}.plan", candidate_profile)
    return {"onnx": onnx, "plans": plans, "num_users": info["num_users"], "num_items": info["num_items"]}


def texts_of(dataset, count: int) -> list[str]:
    test, features = dataset.test, dataset.info.scene_features
    scene = [format_scene_feature(f, test.scene[k][n]) for n in range(count) for k, f in enumerate(features)]
    items = [
        format_item(dataset.items.name[i], dataset.items.category[i], dataset.items.description[i]) for i in range(count)
    ]
    return scene + items


def test_engine_io_matches_the_contract(engines):
    expected = {"inputs": [INPUT_IDS, ATTENTION_MASK], "outputs": [EMBEDDING]}
    assert engine_io_names(engines["plans"]["embedder"]) == expected
    for variant in ("larr", "id_only"):  # id_only too: the ensemble feeds SCENE_EMB to every ctr
        assert engine_io_names(engines["plans"][variant]) == {"inputs": list(CTR_INPUTS), "outputs": [CTR]}, variant


@pytest.mark.parametrize("batch", [1, 7, MAX_BATCH])
def test_fp16_embedder_matches_onnx_runtime(engines, tiny_run, dataset, batch):
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    texts = texts_of(dataset, 8)
    input_ids, attention_mask = tokenizer((texts * 4)[-batch:])
    feeds = {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}
    expected = run_onnx(engines["onnx"]["embedder"], feeds)[0]
    got = run_engine(engines["plans"]["embedder"], feeds)[EMBEDDING]
    assert got.shape == expected.shape
    assert np.all(np.isfinite(got))
    assert np.abs(got - expected).max() <= EMBEDDING_ATOL
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("variant", ["larr", "id_only"])
@pytest.mark.parametrize("candidates", [1, 100])
def test_fp16_ctr_matches_onnx_runtime(engines, tiny_run, dataset, variant, candidates):
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    features = dataset.info.scene_features
    texts = [format_scene_feature(f, dataset.test.scene[k][0]) for k, f in enumerate(features)]
    scene = run_onnx(engines["onnx"]["embedder"], dict(zip((INPUT_IDS, ATTENTION_MASK), tokenizer(texts))))[0]
    rng = np.random.default_rng(candidates)
    items = rng.integers(-3, engines["num_items"] + 3, size=candidates).astype(np.int64)  # some out of range
    feeds = {
        SCENE_EMB: scene,
        SCENE_IDS: np.arange(1, len(features) + 1, dtype=np.int64),
        USER_ID: np.array([dataset.test.user_id[0]], dtype=np.int64),
        ITEM_IDS: items,
    }
    expected = run_onnx(engines["onnx"][variant], feeds)[0]
    got = run_engine(engines["plans"][variant], feeds)[CTR]
    assert got.shape == (candidates,)
    assert np.all(np.isfinite(got))
    assert np.abs(got - expected).max() <= CTR_ATOL
