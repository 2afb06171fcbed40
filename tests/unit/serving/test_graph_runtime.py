"""The torch runtime over static shapes (larr.serving.graphs): on CPU, calls padded to a bucket give the unpadded
outputs (the CUDA graph path with capture off); on a CUDA GPU (``-m gpu``), the captured bf16 graphs agree with fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from larr.contract import PARAM_CUDA_GRAPHS, PARAM_SHAPE_BUCKETS, PARAM_TORCH_DTYPE
from larr.models.ctr_model import CTRModelSpec, LarrCTR
from larr.models.embedder import TextEmbedder
from larr.serving.buckets import Bucket, BucketGrid
from larr.serving.graphs import GraphSettings, TorchDtype
from larr.serving.runtime import SERVING_META_FILE, RuntimeSpec, TorchRuntime
from larr.tokenization import EmbeddingInputConfig

GRID = BucketGrid(batch=(1, 2, 4, 8), length=(8, 16))
K, D = 2, 8  # scene features, embedding width
NUM_USERS, NUM_ITEMS = 4, 3


class NoTokenizer:
    """TextEmbedder.save_pretrained saves a tokenizer too; the runtime never reads it."""

    def save_pretrained(self, directory) -> None:
        pass


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    directory = tmp_path_factory.mktemp("embedder")
    TextEmbedder(LlamaModel(config), projection_dim=8).eval().save_pretrained(directory, NoTokenizer(),
                                                                             EmbeddingInputConfig(max_length=16))
    return directory


@pytest.fixture(scope="module")
def ctr_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    spec = CTRModelSpec(
        variant="larr", field_names=["user", "item", "weather", "time"], field_vocab_sizes=[5, 4, 3, 3], use_llm=True,
        llm_features=K, llm_dim=D, num_items=NUM_ITEMS,
        backbone={"kind": "dcnv2", "embedding_dim": 4, "mlp_hidden": [8], "dropout": 0.0}, agg_dim=8, agg_heads=2,
    )
    directory = tmp_path_factory.mktemp("ctr")
    LarrCTR(spec, torch.randn(NUM_ITEMS, D)).eval().save(directory, {"fields": ["user", "item"],
                                                                      "values": [[0, 1, 2, 3], [0, 1, 2]]})
    (directory / SERVING_META_FILE).write_text(json.dumps({"num_users": NUM_USERS, "num_items": NUM_ITEMS}))
    return directory


def model_config(grid: BucketGrid | None, batched: bool = True, **params: str) -> dict:
    """The parts of a model config the torch runtime reads: parameters and the ctr's scene input dims."""
    if grid is not None:
        params[PARAM_SHAPE_BUCKETS] = grid.to_json()
    batch = ["-1"] if batched else []
    return {"parameters": {k: {"string_value": v} for k, v in params.items()},
            "input": [{"name": "SCENE_EMB", "dims": [*batch, str(K), str(D)]}, {"name": "SCENE_IDS", "dims": [*batch, str(K)]}]}


def runtimes(path: Path, device: str = "cpu", batched: bool = False, **params: str) -> tuple[TorchRuntime, TorchRuntime]:
    """(plain: eager at each call's own shape, bucketed: padded to GRID) over the same files."""
    spec = RuntimeSpec(runtime="torch", device=device)
    plain = TorchRuntime(path, spec, batched=batched, config=model_config(None, batched))
    bucketed = TorchRuntime(path, spec, batched=batched, config=model_config(GRID, batched, **params))
    assert plain.bucketed is None and bucketed.bucketed is not None
    return plain, bucketed


def shapes_seen(runtime: TorchRuntime) -> list[tuple]:
    seen: list[tuple] = []
    runtime.bucketed.module.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    return seen


def embedder_inputs(rows: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) right-padded ids and mask, every row with its own length (at least one real token)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, width + 1, rows)
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int64)
    return rng.integers(1, 50, (rows, width)) * mask, mask


def ctr_inputs(counts: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    b = len(counts)
    return [rng.standard_normal((b, K, D)).astype(np.float32), rng.integers(0, 3, (b, K)), rng.integers(0, 6, (b, 1)),
            rng.integers(-1, NUM_ITEMS + 2, sum(counts)), np.repeat(np.arange(b), counts)]


def test_padded_embedder_calls_give_the_unpadded_embeddings(embedder_dir) -> None:
    plain, bucketed = runtimes(embedder_dir)
    seen = shapes_seen(bucketed)
    for rows, width in ((3, 5), (1, 1), (8, 16), (5, 9)):
        inputs = embedder_inputs(rows, width, seed=rows * width)
        want = plain.run_numpy(list(inputs))
        got = bucketed.run_numpy(list(inputs))
        assert got.shape == want.shape == (rows, 8) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert seen == [(4, 8), (1, 8), (8, 16), (8, 16)]  # every call ran at a bucket's shape


def test_an_embedder_call_beyond_the_grid_runs_unpadded(embedder_dir) -> None:
    plain, bucketed = runtimes(embedder_dir)
    inputs = embedder_inputs(9, 4)  # 9 texts > the largest batch bucket
    np.testing.assert_allclose(bucketed.run_numpy(list(inputs)), plain.run_numpy(list(inputs)), atol=1e-6, rtol=0)
    assert bucketed.bucketed.eager_calls == 1


def test_padded_batched_ctr_calls_give_the_unpadded_scores(ctr_dir) -> None:
    plain, bucketed = runtimes(ctr_dir, batched=True)
    seen = shapes_seen(bucketed)
    for counts in ([3, 1, 2], [1], [2, 2, 2, 2, 2, 2, 2, 2]):
        inputs = ctr_inputs(counts, seed=len(counts))
        want = plain.run_numpy(inputs)
        got = bucketed.run_numpy(inputs)
        assert got.shape == want.shape == (sum(counts),)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert seen == [(4, K, D), (1, K, D), (8, K, D)]


def test_padded_one_request_ctr_calls_give_the_unpadded_scores(ctr_dir) -> None:
    plain, bucketed = runtimes(ctr_dir, batched=False)
    scene_emb, scene_ids, user_id, item_ids, _ = ctr_inputs([5])
    inputs = [scene_emb[0], scene_ids[0], user_id[0], item_ids]
    got = bucketed.run_numpy(inputs)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, plain.run_numpy(inputs), atol=1e-6, rtol=0)


def test_graph_settings_come_from_the_model_config() -> None:
    params = {PARAM_SHAPE_BUCKETS: GRID.to_json()}
    assert GraphSettings.from_params({}, "cuda") is None  # no buckets: today's eager runtime
    assert GraphSettings.from_params(params, "cpu") == GraphSettings(GRID, capture=False, dtype=TorchDtype.FLOAT32)
    assert GraphSettings.from_params(params, "cuda:0") == GraphSettings(GRID, capture=True, dtype=TorchDtype.BFLOAT16)
    assert not GraphSettings.from_params({**params, PARAM_CUDA_GRAPHS: "false"}, "cuda").capture
    assert GraphSettings.from_params({**params, PARAM_TORCH_DTYPE: "float32"}, "cuda").dtype is TorchDtype.FLOAT32
    with pytest.raises(ValueError, match="cuda_graphs must be 'true' or 'false'"):
        GraphSettings.from_params({**params, PARAM_CUDA_GRAPHS: "yes"}, "cuda")
    with pytest.raises(ValueError, match="unknown torch_dtype 'fp8'"):
        GraphSettings.from_params({**params, PARAM_TORCH_DTYPE: "fp8"}, "cpu")


# ------------------------------------------------------------------------------------------------ CUDA graphs


@pytest.fixture
def cuda() -> str:
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a CUDA GPU visible to torch; none is")
    return "cuda"


@pytest.mark.gpu
def test_captured_fp32_graphs_replay_the_eager_outputs(embedder_dir, ctr_dir, cuda) -> None:
    plain, captured = runtimes(embedder_dir, cuda, **{PARAM_TORCH_DTYPE: "float32"})
    assert set(captured.bucketed.graphs) == set(GRID.buckets())  # every bucket captured at load
    for rows, width in ((3, 5), (8, 16), (1, 1)):
        inputs = list(embedder_inputs(rows, width))
        np.testing.assert_allclose(captured.run_numpy(inputs), plain.run_numpy(inputs), atol=1e-5, rtol=0)
    plain, captured = runtimes(ctr_dir, cuda, batched=True, **{PARAM_TORCH_DTYPE: "float32"})
    inputs = ctr_inputs([3, 1, 2])
    np.testing.assert_allclose(captured.run_numpy(inputs), plain.run_numpy(inputs), atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_captured_bf16_graphs_stay_close_to_fp32(embedder_dir, ctr_dir, cuda) -> None:
    plain, captured = runtimes(embedder_dir, cuda)  # bf16 by default on CUDA
    assert captured.bucketed.settings.dtype is TorchDtype.BFLOAT16 and Bucket(8, 16) in captured.bucketed.graphs
    inputs = list(embedder_inputs(8, 16))
    want, got = plain.run_numpy(inputs), captured.run_numpy(inputs)
    cosine = (want * got).sum(axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.999 and got.dtype == np.float32
    plain, captured = runtimes(ctr_dir, cuda, batched=True)
    inputs = ctr_inputs([3, 1, 2])
    np.testing.assert_allclose(captured.run_numpy(inputs), plain.run_numpy(inputs), atol=1e-3, rtol=0)
