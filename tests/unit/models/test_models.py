"""Embedder pooling with padding, aggregation-encoder masking, the CTR model and its serving form."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from larr.models.backbone_config import BackboneConfig
from larr.models.ctr_model import AggregationEncoder, CTRModelSpec, LarrCTR, ServingCTR, index_table
from larr.models.embedder import TextEmbedder, last_token_pool


def tiny_encoder() -> LlamaModel:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaModel(config).eval()


def test_last_token_pool_picks_last_real_position():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = last_token_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, 1])
    torch.testing.assert_close(pooled[1], hidden[1, 3])


def test_embedder_ignores_right_padding():
    embedder = TextEmbedder(tiny_encoder(), projection_dim=8).eval()
    ids = torch.tensor([[5, 6, 7, 9]])
    mask = torch.ones_like(ids)
    alone = embedder(ids, mask)
    padded_ids = torch.tensor([[5, 6, 7, 9, 0, 0, 0], [5, 6, 9, 0, 0, 0, 0]])
    padded_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    batch = embedder(padded_ids, padded_mask)
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch[1], embedder(torch.tensor([[5, 6, 9]]), torch.ones(1, 3, dtype=torch.long))[0], atol=1e-5, rtol=1e-5)
    assert torch.allclose(batch.norm(dim=-1), torch.ones(2))
    assert TextEmbedder(tiny_encoder(), projection_dim=None).output_dim == 16


def test_aggregation_encoder_masking():
    torch.manual_seed(0)
    encoder = AggregationEncoder(num_features=3, input_dim=8, dim=16, layers=2, heads=4, dropout=0.0, output_dim=5).eval()
    x = torch.randn(2, 3, 8)
    present = torch.tensor([[True, True, False], [True, True, True]])
    agg, aligned = encoder(x, present)
    assert agg.shape == (2, 16) and aligned.shape == (2, 5)
    # a masked feature's value cannot change the output ...
    changed = x.clone()
    changed[0, 2] = 100.0
    agg_changed, _ = encoder(changed, present)
    torch.testing.assert_close(agg_changed[0], agg[0])
    # ... while a present one does
    changed[1, 2] = 100.0
    assert not torch.allclose(encoder(changed, present)[0][1], agg[1])
    # all features masked still gives a finite output ([AGG] is never masked)
    assert torch.isfinite(encoder(x, torch.zeros(2, 3, dtype=torch.bool))[0]).all()
    with pytest.raises(ValueError, match="expected 3 scene features"):
        encoder(torch.randn(1, 4, 8))


def _spec(use_llm: bool, llm_input_scale: float = 1.0) -> CTRModelSpec:
    return CTRModelSpec(
        variant="larr" if use_llm else "id_only", field_names=["user", "item", "weather", "time"],
        field_vocab_sizes=[5, 4, 3, 3], use_llm=use_llm, llm_features=2 if use_llm else 0, llm_dim=8 if use_llm else 0,
        num_items=3, backbone={"kind": "dcnv2", "embedding_dim": 4, "mlp_hidden": [8], "dropout": 0.0}, agg_dim=8, agg_heads=2,
        llm_input_scale=llm_input_scale,
    )


@pytest.mark.parametrize(("use_llm", "llm_input_scale"), [(True, 1.0), (True, 0.01), (False, 1.0)])
def test_serving_ctr_matches_training_forward_and_maps_unknown_ids(use_llm: bool, llm_input_scale: float):
    torch.manual_seed(0)
    model = LarrCTR(_spec(use_llm, llm_input_scale), torch.randn(3, 8) if use_llm else None).eval()
    # raw ids 0..3 for users, 0..2 for items; vocab values = ids seen in training
    serving = ServingCTR(model, index_table([0, 1, 2, 3], 4), index_table([0, 1, 2], 3)).eval()
    scene = torch.randn(2, 8)
    scene_ids = torch.tensor([1, 2])
    items = torch.tensor([0, 2, 1])
    probs = serving(scene, scene_ids, torch.tensor([3]), items)
    sparse = torch.tensor([[4, 1, 1, 2], [4, 3, 1, 2], [4, 2, 1, 2]])
    expected = model(sparse, scene[None].expand(3, -1, -1), items + 1).logits.sigmoid()
    torch.testing.assert_close(probs, expected)
    # unknown and negative ids score with the out-of-vocabulary rows instead of reading out of range
    weird = serving(scene, scene_ids, torch.tensor([10**9]), torch.tensor([-5, 10**9]))
    oov_sparse = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 2]])
    oov = model(oov_sparse, scene[None].expand(2, -1, -1), torch.zeros(2, dtype=torch.long)).logits.sigmoid()
    torch.testing.assert_close(weird, oov)


def test_ctr_model_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LarrCTR(_spec(True), torch.randn(3, 8)).eval()
    model.save(tmp_path, {"fields": ["user"], "values": [[0]]})
    loaded, vocab = LarrCTR.load(tmp_path)
    sparse = torch.tensor([[1, 1, 1, 1]])
    scene = torch.randn(1, 2, 8)
    torch.testing.assert_close(loaded(sparse, scene, torch.tensor([1])).logits, model(sparse, scene, torch.tensor([1])).logits)
    assert vocab == {"fields": ["user"], "values": [[0]]}
    assert isinstance(BackboneConfig.from_dict(loaded.spec.backbone), BackboneConfig)


def test_ctr_json_spells_the_backbone_kind_as_a_string(tmp_path):
    # training stores asdict(BackboneConfig), whose kind is a BackboneKind; ctr.json must hold the plain value
    spec = _spec(False)
    spec.backbone = asdict(BackboneConfig(kind="deepfm", embedding_dim=4, mlp_hidden=(8,)))
    model = LarrCTR(spec).eval()
    model.save(tmp_path, {"fields": ["user"], "values": [[0]]})
    assert json.loads((tmp_path / "ctr.json").read_text())["backbone"]["kind"] == "deepfm"
    loaded, _ = LarrCTR.load(tmp_path)
    assert loaded.spec.backbone_config == spec.backbone_config
    sparse = torch.tensor([[2, 1, 1, 0], [4, 3, 2, 1]])
    torch.testing.assert_close(loaded(sparse).logits, model(sparse).logits)
    # the alignment target is the user field's row of the shared table (user field first, offset 0)
    torch.testing.assert_close(model.collaborative_user(sparse), model.backbone.embedding.weight[sparse[:, 0]])
