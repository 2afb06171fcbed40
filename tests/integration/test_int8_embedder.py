"""A repository exported with ``--embedder-precision int8`` serves on a real tritonserver.

The served embedder's vectors are compared with the in-process fp32 PyTorch embedder by cosine, with the
bounds the export promises (larr.export.embedder_precision: mean >= MIN_MEAN_COSINE, each >= MIN_COSINE).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient

from larr.clients import LarrClient
from larr.contract import ATTENTION_MASK, EMBEDDER_MODEL, EMBEDDING, INPUT_IDS
from larr.data.schema import load_dataset
from larr.export.embedder_precision import MIN_COSINE, MIN_MEAN_COSINE
from larr.export.options import ONNX_FILE, VERSION
from larr.export.repository import RepositoryOptions, write_repository
from larr.models.embedder import TextEmbedder, embed_texts
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingTokenizer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def int8_repository(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("larr_repository_int8")
    write_repository(tiny_run.run_dir, out, RepositoryOptions(target="cpu", embedder_precision="int8",
                                                              cache_capacity=64, max_candidates=50))
    return out


@pytest.fixture(scope="module")
def int8_server(triton_server_factory, int8_repository):
    return triton_server_factory(int8_repository)


def test_repository_holds_the_int8_graph(int8_repository):
    graph = onnx.load(str(int8_repository / EMBEDDER_MODEL / VERSION / ONNX_FILE))
    assert any(node.op_type == "MatMulInteger" for node in graph.graph.node)


def test_served_int8_embedder_matches_the_fp32_embedder(int8_server, tiny_run):
    dataset = load_dataset(tiny_run.data_dir, splits=("test",))
    features = dataset.info.scene_features
    texts = [format_scene_feature(features[k], dataset.test.scene[k][row]) for row in range(4) for k in range(len(features))]
    texts.append(format_scene_feature(features[0], "a text no split holds"))
    tokenizer = EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)
    input_ids, attention_mask = tokenizer(texts)  # (B, T) int64 each
    client = grpcclient.InferenceServerClient(int8_server.grpc_url)
    inputs = []
    for name, value in ((INPUT_IDS, input_ids), (ATTENTION_MASK, attention_mask)):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    served = client.infer(EMBEDDER_MODEL, inputs).as_numpy(EMBEDDING)  # (B, D)
    expected = embed_texts(TextEmbedder.from_pretrained(tiny_run.embedder_dir), tokenizer, texts)  # (B, D), fp32
    cosine = (served * expected).sum(axis=1)  # unit vectors
    assert cosine.mean() >= MIN_MEAN_COSINE and cosine.min() >= MIN_COSINE, cosine


def test_int8_ensemble_scores(int8_server, tiny_run):
    dataset = load_dataset(tiny_run.data_dir, splits=("test",))
    scene = dict(zip(dataset.info.scene_features, dataset.test.scene_row(0)))
    scene[dataset.info.scene_features[0]] = "a fresh text: a cache miss, embedded by the int8 graph"
    with LarrClient(int8_server.grpc_url) as client:
        ctr = client.score(scene, int(dataset.test.user_id[0]), [0, 1, 2])
    assert ctr.shape == (3,) and np.all((ctr > 0) & (ctr < 1))
