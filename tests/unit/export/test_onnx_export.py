"""ONNX export of the embedder and the serving CTR model: graph contracts and ONNX Runtime == PyTorch.

Parity is checked on real inputs -- dataset texts through EmbeddingTokenizer, vocabulary scene ids,
dataset users and items -- at batch and sequence sizes other than the trace example's (2 x 8 texts,
3 candidates).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

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
from larr.data.schema import load_dataset
from larr.export.onnx_export import (
    describe_inputs,
    export_ctr,
    export_embedder,
    external_data_path,
    load_serving_ctr,
    onnx_digest,
    run_onnx,
)
from larr.models.embedder import TextEmbedder
from larr.text import format_item, format_scene_feature
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer

ATOL = 1e-4  # fp32 ONNX Runtime vs PyTorch


@pytest.fixture(scope="module")
def dataset(tiny_run):
    return load_dataset(tiny_run.data_dir)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """ONNX graphs of the tiny run: embedder, LARR CTR, ID-only CTR."""
    out = tmp_path_factory.mktemp("onnx")
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    dim = TextEmbedder.from_pretrained(tiny_run.embedder_dir).output_dim
    return {
        "embedder": export_embedder(tiny_run.embedder_dir, out / "embedder" / "model.onnx"),
        "larr": export_ctr(tiny_run.ctr_dir("larr"), info["num_users"], info["num_items"], out / "larr" / "model.onnx"),
        "id_only": export_ctr(
            tiny_run.ctr_dir("id_only"), info["num_users"], info["num_items"], out / "id_only" / "model.onnx",
            scene_dim=dim,
        ),
        "num_users": info["num_users"],
        "num_items": info["num_items"],
        "dim": dim,
    }


@pytest.fixture(scope="module")
def embedder(tiny_run):
    """The PyTorch reference exactly as training loads it (default attention implementation)."""
    return TextEmbedder.from_pretrained(tiny_run.embedder_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_run):
    return EmbeddingTokenizer.from_directory(tiny_run.embedder_dir)


def real_texts(dataset, count: int) -> list[str]:
    """Scene-feature texts and item texts from the dataset, as the embedder sees them in training/serving."""
    test = dataset.test
    features = dataset.info.scene_features
    scene = [format_scene_feature(f, test.scene[k][n]) for n in range(count) for k, f in enumerate(features)]
    items = [
        format_item(dataset.items.name[i], dataset.items.category[i], dataset.items.description[i]) for i in range(count)
    ]
    return scene + items


@torch.no_grad()
def torch_embed(embedder, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return embedder(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()


# --------------------------------------------------------------------------------------------- embedder


def test_embedder_graph_contract(exported):
    model = onnx.load(str(exported["embedder"]))
    inputs = {v.name: v for v in model.graph.input}
    assert list(inputs) == [INPUT_IDS, ATTENTION_MASK]
    for value in inputs.values():
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = value.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param for d in dims), "batch and sequence must both be dynamic"
    (output,) = model.graph.output
    assert output.name == EMBEDDING and output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out_dims = output.type.tensor_type.shape.dim
    assert out_dims[0].dim_param and out_dims[1].dim_value == exported["dim"]
    assert not external_data_path(exported["embedder"]).exists(), "a tiny model must stay one file"


@pytest.mark.parametrize("batch", [1, 3, 13])
def test_embedder_matches_pytorch_on_dataset_texts(exported, embedder, tokenizer, dataset, batch):
    texts = real_texts(dataset, 8)
    rng = np.random.default_rng(batch)
    chosen = [texts[i] for i in rng.choice(len(texts), size=batch, replace=False)]
    chosen[-1] = texts[-1]  # an item text: long, so T reaches max_length (not the trace example's 8)
    input_ids, attention_mask = tokenizer(chosen)
    assert input_ids.shape[1] != 8
    (got,) = run_onnx(exported["embedder"], {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
    expected = torch_embed(embedder, input_ids, attention_mask)
    assert got.shape == (batch, exported["dim"]) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= ATOL
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embedder_batch_equals_single_calls(exported, tokenizer, dataset):
    """Right padding is masked: a text's embedding does not depend on its batch or padded width."""
    texts = real_texts(dataset, 2)[:5] + real_texts(dataset, 2)[-2:]  # short scene texts and long item texts
    input_ids, attention_mask = tokenizer(texts)
    (batched,) = run_onnx(exported["embedder"], {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
    for row, text in enumerate(texts):
        single_ids, single_mask = tokenizer([text])
        assert single_ids.shape[1] <= input_ids.shape[1]
        (single,) = run_onnx(exported["embedder"], {INPUT_IDS: single_ids, ATTENTION_MASK: single_mask})
        assert np.abs(single[0] - batched[row]).max() <= 1e-5, text


def test_embedder_export_is_deterministic_and_versioned(exported, tiny_run, tmp_path):
    """The digest keys the feature cache: the same weights give the same version, other weights another."""
    again = export_embedder(tiny_run.embedder_dir, tmp_path / "again.onnx", verify=False)
    assert onnx_digest(again) == onnx_digest(exported["embedder"])
    assert len(onnx_digest(again)) == 12


def test_embedder_external_data(exported, tiny_run, tokenizer, dataset, tmp_path):
    """Forced external data (what >2 GB models get): graph + one data file, same outputs, digest covers the data."""
    path = export_embedder(tiny_run.embedder_dir, tmp_path / "model.onnx", external_data=True)
    data = external_data_path(path)
    assert data.exists() and data.stat().st_size > path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    input_ids, attention_mask = tokenizer(real_texts(dataset, 3))
    feeds = {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}
    np.testing.assert_array_equal(run_onnx(path, feeds)[0], run_onnx(exported["embedder"], feeds)[0])
    before = onnx_digest(path)
    with data.open("r+b") as handle:  # same graph file, other weights
        handle.seek(data.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert onnx_digest(path) != before


def test_any_text_embedder_dir_exports(tiny_run, tokenizer, dataset, tmp_path):
    """A Qwen2-shaped encoder without projection head (D = H) exports with the same contract and parity."""
    hf_config = Qwen2Config(
        vocab_size=tokenizer.tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = TextEmbedder(Qwen2Model(hf_config), projection_dim=None)
    source = tmp_path / "qwen2_embedder"
    hf_tokenizer = AutoTokenizer.from_pretrained(tiny_run.embedder_dir)
    model.save_pretrained(source, hf_tokenizer, EmbeddingInputConfig.load(tiny_run.embedder_dir))
    path = export_embedder(source, tmp_path / "qwen2.onnx")
    input_ids, attention_mask = tokenizer(real_texts(dataset, 4))
    (got,) = run_onnx(path, {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})
    expected = torch_embed(TextEmbedder.from_pretrained(source), input_ids, attention_mask)
    assert got.shape == (len(input_ids), 32)
    assert np.abs(got - expected).max() <= ATOL


# --------------------------------------------------------------------------------------------- CTR


def ctr_feeds(dataset, tiny_run, embedder, tokenizer, row: int, items: np.ndarray, user: int | None = None) -> dict:
    """One real request: test row ``row``'s scene (embedded by the PyTorch embedder), its user, ``items``."""
    features = dataset.info.scene_features
    texts = [dataset.test.scene[k][row] for k in range(len(features))]
    input_ids, attention_mask = tokenizer([format_scene_feature(f, t) for f, t in zip(features, texts)])
    vocab = json.loads((tiny_run.ctr_dir("larr") / "vocab.json").read_text())
    scene_ids = [{v: i for i, v in enumerate(vocab["values"][2 + k], start=1)}.get(t, 0) for k, t in enumerate(texts)]
    return {
        SCENE_EMB: torch_embed(embedder, input_ids, attention_mask),
        SCENE_IDS: np.array(scene_ids, dtype=np.int64),
        USER_ID: np.array([dataset.test.user_id[row] if user is None else user], dtype=np.int64),
        ITEM_IDS: items.astype(np.int64),
    }


@torch.no_grad()
def torch_ctr(serving, feeds: dict) -> np.ndarray:
    return serving(*(torch.from_numpy(feeds[name]) for name in (SCENE_EMB, SCENE_IDS, USER_ID, ITEM_IDS))).numpy()


def test_ctr_graph_contract(exported, dataset):
    k, d = len(dataset.info.scene_features), exported["dim"]
    for variant in ("larr", "id_only"):
        assert describe_inputs(exported[variant]) == {
            SCENE_EMB: [k, d], SCENE_IDS: [k], USER_ID: [1], ITEM_IDS: ["candidates"],
        }, variant
        model = onnx.load(str(exported[variant]))
        types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
        assert types == {SCENE_EMB: 1, SCENE_IDS: 7, USER_ID: 7, ITEM_IDS: 7}  # FLOAT, INT64
        assert [o.name for o in model.graph.output] == [CTR]


@pytest.mark.parametrize("variant", ["larr", "id_only"])
@pytest.mark.parametrize("candidates", [1, 100])
def test_ctr_matches_pytorch(exported, tiny_run, dataset, embedder, tokenizer, variant, candidates):
    serving = load_serving_ctr(tiny_run.ctr_dir(variant), exported["num_users"], exported["num_items"])
    rng = np.random.default_rng(candidates)
    for row in (0, 7):
        items = rng.choice(exported["num_items"], size=candidates, replace=False)
        feeds = ctr_feeds(dataset, tiny_run, embedder, tokenizer, row, items)
        (got,) = run_onnx(exported[variant], feeds)
        assert got.shape == (candidates,) and got.dtype == np.float32
        assert np.all((got > 0) & (got < 1))
        assert np.abs(got - torch_ctr(serving, feeds)).max() <= ATOL


@pytest.mark.parametrize("variant", ["larr", "id_only"])
def test_ctr_out_of_range_ids_read_the_unseen_row(exported, tiny_run, dataset, embedder, tokenizer, variant):
    num_users, num_items = exported["num_users"], exported["num_items"]
    serving = load_serving_ctr(tiny_run.ctr_dir(variant), num_users, num_items)
    unknown = np.array([-1, -(2**40), num_items, num_items + 1, 2**40], dtype=np.int64)
    items = np.concatenate([unknown, [0, num_items - 1]])
    for user in (-5, num_users, 2**50, int(dataset.test.user_id[3])):
        feeds = ctr_feeds(dataset, tiny_run, embedder, tokenizer, 3, items, user=user)
        (got,) = run_onnx(exported[variant], feeds)
        assert np.all(np.isfinite(got))
        assert np.abs(got - torch_ctr(serving, feeds)).max() <= ATOL
        assert np.ptp(got[: len(unknown)]) <= 1e-6, "every unknown item id must score like the unseen item"
    out_of_range = [run_onnx(exported[variant], ctr_feeds(dataset, tiny_run, embedder, tokenizer, 3, items, user=u))[0]
                    for u in (-5, num_users, 2**50)]
    assert np.abs(out_of_range[0] - out_of_range[1]).max() <= 1e-6
    assert np.abs(out_of_range[0] - out_of_range[2]).max() <= 1e-6


def test_id_only_keeps_scene_emb_input_and_ignores_it(exported, tiny_run, dataset, embedder, tokenizer):
    feeds = ctr_feeds(dataset, tiny_run, embedder, tokenizer, 2, np.arange(10))
    (with_scene,) = run_onnx(exported["id_only"], feeds)
    (with_zeros,) = run_onnx(exported["id_only"], {**feeds, SCENE_EMB: np.zeros_like(feeds[SCENE_EMB])})
    np.testing.assert_array_equal(with_scene, with_zeros)
    (larr_scene,) = run_onnx(exported["larr"], feeds)
    (larr_zeros,) = run_onnx(exported["larr"], {**feeds, SCENE_EMB: np.zeros_like(feeds[SCENE_EMB])})
    assert np.abs(larr_scene - larr_zeros).max() > 0, "the LARR graph must read SCENE_EMB"


def test_id_only_export_needs_the_scene_dim(tiny_run, exported, tmp_path):
    with pytest.raises(ValueError, match="scene_dim"):
        export_ctr(tiny_run.ctr_dir("id_only"), exported["num_users"], exported["num_items"], tmp_path / "x.onnx")


@pytest.mark.parametrize("variant", ["larr", "id_only"])
def test_batched_ctr_graph_scores_each_request_like_the_one_request_graph(
    exported, tiny_run, dataset, embedder, tokenizer, variant, tmp_path
):
    """One run of the batched graph over ragged requests == the one-request graph run per request."""
    scene_dim = exported["dim"] if variant == "id_only" else None
    path = export_ctr(tiny_run.ctr_dir(variant), exported["num_users"], exported["num_items"], tmp_path / "b.onnx",
                      scene_dim=scene_dim, batched=True)
    k, d = len(dataset.info.scene_features), exported["dim"]
    assert describe_inputs(path) == {
        SCENE_EMB: ["requests", k, d], SCENE_IDS: ["requests", k], USER_ID: ["requests", 1],
        ITEM_IDS: ["candidates"], ITEM_REQUEST: ["candidates"],
    }
    rng = np.random.default_rng(5)
    requests = [ctr_feeds(dataset, tiny_run, embedder, tokenizer, row, rng.choice(exported["num_items"], size=n))
                for row, n in ((0, 4), (7, 1), (3, 9))]
    batch = {
        SCENE_EMB: np.stack([r[SCENE_EMB] for r in requests]),
        SCENE_IDS: np.stack([r[SCENE_IDS] for r in requests]),
        USER_ID: np.stack([r[USER_ID] for r in requests]),
        ITEM_IDS: np.concatenate([r[ITEM_IDS] for r in requests]),
        ITEM_REQUEST: np.repeat(np.arange(3), [len(r[ITEM_IDS]) for r in requests]),
    }
    (got,) = run_onnx(path, batch)
    expected = np.concatenate([run_onnx(exported[variant], r)[0] for r in requests])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= ATOL
