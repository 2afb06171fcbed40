"""The CTR backbones (dcnv2 / deepfm / dnn / finalmlp), their config and FieldVocab on tiny synthetic data."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from larr.models.backbone_config import KINDS, BackboneConfig, BackboneKind
from larr.models.backbones import BACKBONES, Backbone, DCNv2Backbone, DeepFMBackbone, DNNBackbone, build_backbone
from larr.models.field_vocab import FieldVocab

SIZES = [6, 9, 4]  # rows per field, row 0 = unseen
# kinds whose checkpoint keys and forward are written out below (finalmlp has its own formula test at the end)
CHECKPOINT_KINDS = ("dcnv2", "deepfm", "dnn")


def _small(kind: str, dense_dim: int = 0, **overrides) -> Backbone:
    settings = {"embedding_dim": 4, "cross_layers": 2, "mlp_hidden": (16, 8), "dropout": 0.1, **overrides}
    config = BackboneConfig(kind=kind, **settings)
    return build_backbone(SIZES, dense_dim, config)


def _batch(n: int, dense_dim: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, s, (n,), generator=g) for s in SIZES], dim=1)
    dense = torch.randn(n, dense_dim, generator=g) if dense_dim else None
    return sparse, dense


# --------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dense_dim", [0, 5])
def test_forward_shapes(kind: str, dense_dim: int) -> None:
    model = _small(kind, dense_dim, batch_norm=True)
    sparse, dense = _batch(7, dense_dim)
    assert model(sparse, dense).shape == (7,)
    model.eval()
    assert model(sparse[:1], None if dense is None else dense[:1]).shape == (1,)


@pytest.mark.parametrize("kind", KINDS)
def test_unseen_index_zero_is_a_valid_row(kind: str) -> None:
    model = _small(kind).eval()
    sparse = torch.zeros(3, len(SIZES), dtype=torch.long)
    out = model(sparse)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, out[0].expand(3))  # every all-unseen row scores the same


def test_dense_features_change_the_score() -> None:
    model = _small("dcnv2", dense_dim=3).eval()
    sparse, _ = _batch(4)
    a = model(sparse, torch.zeros(4, 3))
    b = model(sparse, torch.ones(4, 3))
    assert not torch.allclose(a, b)


def test_wrong_inputs_raise_errors() -> None:
    model = _small("dcnv2", dense_dim=3)
    sparse, dense = _batch(4, 3)
    with pytest.raises(ValueError, match=r"sparse must be \(B, 3\)"):
        model(sparse[:, :2], dense)
    with pytest.raises(ValueError, match=r"sparse must be \(B, 3\)"):
        model(sparse[0], dense)
    with pytest.raises(ValueError, match="integer"):
        model(sparse.float(), dense)
    with pytest.raises(ValueError, match="pass dense"):
        model(sparse, None)
    with pytest.raises(ValueError, match=r"dense must be \(4, 3\)"):
        model(sparse, dense[:, :2])
    with pytest.raises(ValueError, match=r"dense must be \(4, 3\)"):
        model(sparse, dense[:3])
    bad = sparse.clone()
    bad[2, 1] = SIZES[1]
    with pytest.raises(ValueError, match=r"sparse\[2, 1\] = 9 is outside field 1's vocabulary \[0, 9\)"):
        model(bad, dense)
    with pytest.raises(ValueError, match="dense_dim=0"):
        _small("dnn")(sparse, dense)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kind": "xdeepfm"}, "kind"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"kind": "dnn", "mlp_hidden": ()}, "mlp_hidden"),
        ({"embedding_l2": -1.0}, "embedding_l2"),
        ({"embedding_l2_scope": "rows"}, "embedding_l2_scope"),
    ],
)
def test_bad_config_raises(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackboneConfig(**overrides)


def test_config_from_dict_rejects_unknown_keys() -> None:
    assert BackboneConfig.from_dict({"kind": "dnn", "mlp_hidden": [8, 4]}).mlp_hidden == (8, 4)
    with pytest.raises(ValueError, match="unknown BackboneConfig field"):
        BackboneConfig.from_dict({"hidden": [8]})


def test_kind_is_an_enum_normalised_once_and_serialised_as_its_value() -> None:
    config = BackboneConfig(kind="deepfm")
    assert config.kind is BackboneKind.DEEPFM
    assert BackboneConfig(kind=BackboneKind.DNN).kind is BackboneKind.DNN
    assert [k.value for k in BackboneKind] == list(KINDS)
    # ctr.json stores asdict(config): the kind must come back out as the plain string and load again
    raw = json.loads(json.dumps(asdict(config)))
    assert raw["kind"] == "deepfm" and type(raw["kind"]) is str
    assert BackboneConfig.from_dict(raw) == config


@pytest.mark.parametrize("kind", KINDS)
def test_build_backbone_picks_the_class_of_the_kind(kind: str) -> None:
    model = _small(kind)
    assert type(model) is BACKBONES[BackboneKind(kind)]
    assert type(model).kind is model.config.kind


def test_a_backbone_class_rejects_another_kind() -> None:
    with pytest.raises(ValueError, match="DNNBackbone builds kind 'dnn', got a config of kind 'dcnv2'"):
        DNNBackbone(SIZES, 0, BackboneConfig(kind="dcnv2"))
    with pytest.raises(ValueError, match="at least one field"):
        DCNv2Backbone([], 0, BackboneConfig(kind="dcnv2"))
    with pytest.raises(ValueError, match="dense_dim"):
        DeepFMBackbone(SIZES, -1, BackboneConfig(kind="deepfm"))


# --------------------------------------------------------------------------------------------- checkpoints
# Saved LarrCTR checkpoints (model.safetensors) hold these parameters under these names; a seed must also give
# the weights it gave when they were trained. The expectations below are written out, not taken from the code.

DENSE = 5
HIDDEN = (16, 8)
CROSS_LAYERS = 2
EMB = 4
DEEP_KEYS = [  # MLP (16, 8) with BatchNorm and dropout: Linear 0, BN 1, ReLU 2, Dropout 3, Linear 4, BN 5, ...
    f"deep.{i}.{name}"
    for i in (0, 1, 4, 5)
    for name in (("weight", "bias") if i in (0, 4) else ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
]
EXPECTED_KEYS = {
    "dnn": {"embedding.weight", *DEEP_KEYS, "head.weight", "head.bias"},
    "dcnv2": {"embedding.weight", *DEEP_KEYS, "cross.layers.0.weight", "cross.layers.0.bias", "cross.layers.1.weight",
              "cross.layers.1.bias", "head.weight", "head.bias"},
    "deepfm": {"embedding.weight", *DEEP_KEYS, "first_order.weight", "dense_linear.weight", "head.weight", "head.bias"},
}


def _checkpoint_model(kind: str) -> Backbone:
    return _small(kind, DENSE, cross_layers=CROSS_LAYERS, mlp_hidden=HIDDEN, batch_norm=True)


def _replayed_init(kind: str, seed: int) -> dict[str, torch.Tensor]:
    """The parameters ``seed`` gives: modules constructed (each drawing its default init) in the order
    embedding, deep tower, [cross layers | first-order table, dense linear], head; then re-initialised —
    embedding tables N(0, 1e-4) in that order, Linear weights Xavier-normal in construction order, biases 0."""
    torch.manual_seed(seed)
    width = len(SIZES) * EMB + DENSE  # (B, F*E + dense) tower input
    tables = {"embedding": nn.Embedding(sum(SIZES), EMB)}
    linears = {"deep.0": nn.Linear(width, HIDDEN[0]), "deep.4": nn.Linear(HIDDEN[0], HIDDEN[1])}
    if kind == "dcnv2":
        linears.update({f"cross.layers.{i}": nn.Linear(width, width) for i in range(CROSS_LAYERS)})
        linears["head"] = nn.Linear(width + HIDDEN[-1], 1)
    elif kind == "deepfm":
        tables["first_order"] = nn.Embedding(sum(SIZES), 1)
        linears["dense_linear"] = nn.Linear(DENSE, 1, bias=False)
        linears["head"] = nn.Linear(HIDDEN[-1], 1)
    else:
        linears["head"] = nn.Linear(HIDDEN[-1], 1)
    for table in tables.values():
        nn.init.normal_(table.weight, std=1e-4)
    for linear in linears.values():
        nn.init.xavier_normal_(linear.weight)
    expected = {f"{name}.weight": t.weight.detach() for name, t in tables.items()}
    for name, linear in linears.items():
        expected[f"{name}.weight"] = linear.weight.detach()
        if linear.bias is not None:
            expected[f"{name}.bias"] = torch.zeros_like(linear.bias)
    return expected


def _reference_logits(kind: str, sd: dict[str, torch.Tensor], sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """The eval-mode forward of each kind, written out on the state dict."""
    offsets = torch.tensor([0, *np.cumsum(SIZES)[:-1]])
    rows = sparse + offsets  # (B, F) rows of the shared table
    emb = sd["embedding.weight"][rows]  # (B, F, E)
    x = torch.cat([emb.flatten(1), dense], dim=1)  # (B, F*E + dense)

    def linear(name: str, v: torch.Tensor) -> torch.Tensor:
        out = v @ sd[f"{name}.weight"].T
        return out + sd[f"{name}.bias"] if f"{name}.bias" in sd else out

    def deep(v: torch.Tensor) -> torch.Tensor:
        for lin, bn in ((0, 1), (4, 5)):
            v = linear(f"deep.{lin}", v)
            mean, var = sd[f"deep.{bn}.running_mean"], sd[f"deep.{bn}.running_var"]
            v = (v - mean) / torch.sqrt(var + 1e-5) * sd[f"deep.{bn}.weight"] + sd[f"deep.{bn}.bias"]
            v = v.clamp_min(0)
        return v  # (B, H)

    if kind == "dnn":
        return linear("head", deep(x)).squeeze(1)
    if kind == "dcnv2":
        crossed = x
        for i in range(CROSS_LAYERS):
            crossed = x * linear(f"cross.layers.{i}", crossed) + crossed  # (B, D)
        return linear("head", torch.cat([crossed, deep(x)], dim=1)).squeeze(1)
    first_order = sd["first_order.weight"][rows].sum(dim=(1, 2))  # (B,)
    pairwise = sum((emb[:, i] * emb[:, j]).sum(dim=1) for i in range(len(SIZES)) for j in range(i + 1, len(SIZES)))
    return first_order + pairwise + linear("dense_linear", dense).squeeze(1) + linear("head", deep(x)).squeeze(1)


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_checkpoint_keys_and_seeded_init_are_stable(kind: str) -> None:
    torch.manual_seed(3)
    model = _checkpoint_model(kind)
    state = model.state_dict()
    assert set(state) == EXPECTED_KEYS[kind]
    expected = _replayed_init(kind, seed=3)
    for name, value in expected.items():
        assert torch.equal(state[name], value), name
    # BatchNorm starts at identity statistics; nothing else is left unchecked
    assert set(state) - set(expected) == {k for k in DEEP_KEYS if ".1." in k or ".5." in k}


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_forward_matches_the_written_out_architecture(kind: str) -> None:
    model = _checkpoint_model(kind)
    g = torch.Generator().manual_seed(4)
    # non-trivial weights and BatchNorm statistics, as a trained checkpoint has
    state = {k: (torch.rand(v.shape, generator=g) + 0.5 if "running_var" in k else torch.randn(v.shape, generator=g))
             if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.eval()
    sparse, dense = _batch(16, DENSE, seed=2)
    with torch.no_grad():
        got = model(sparse, dense)
    want = _reference_logits(kind, state, sparse, dense)
    assert got.shape == (16,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------- regularisation


def test_regularization_is_zero_without_l2() -> None:
    model = _small("deepfm")
    model(*_batch(4))
    assert model.regularization().item() == 0.0


def test_regularization_table_scope_matches_fuxictr() -> None:
    model = _small("deepfm", embedding_l2=0.05)
    model(*_batch(4))
    expected = 0.05 / 2 * (model.embedding.weight.pow(2).sum() + model.first_order.weight.pow(2).sum())
    assert torch.allclose(model.regularization(), expected)


def test_regularization_batch_scope_covers_only_looked_up_rows() -> None:
    model = _small("dnn", embedding_l2=0.1, embedding_l2_scope="batch")
    with torch.no_grad():
        model.embedding.weight.fill_(1.0)
    sparse = torch.tensor([[1, 2, 3], [1, 5, 3]])  # distinct rows: 1 | 2, 5 | 3 → 4 rows of dim 4
    model(sparse)
    assert model.regularization().item() == pytest.approx(0.1 / 2 * 4 * 4)
    model.regularization().backward()
    touched = model.embedding.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == [1, SIZES[0] + 2, SIZES[0] + 5, SIZES[0] + SIZES[1] + 3]


# --------------------------------------------------------------------------------------------- learning


def _cross_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label = XOR of two fields' parities: no single field predicts it, only their cross does."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(1, s, (n,), generator=g) for s in SIZES], dim=1)
    label = ((sparse[:, 0] % 2) ^ (sparse[:, 1] % 2)).float()
    return sparse, label


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_learns_a_cross_feature(kind: str) -> None:
    torch.manual_seed(0)
    model = _small(kind, dropout=0.0)
    sparse, label = _cross_problem(512, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def loss() -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(model(sparse), label)

    start = loss().item()
    for _ in range(300):
        optimizer.zero_grad()
        step_loss = loss() + model.regularization()
        step_loss.backward()
        optimizer.step()
    model.eval()
    end = loss().item()
    accuracy = ((model(sparse) > 0).float() == label).float().mean().item()
    assert start > 0.6  # ~log 2: nothing learnt yet
    assert end < 0.1, f"{kind}: loss {start:.3f} → {end:.3f}"
    assert accuracy > 0.98


# --------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize(("kind", "overrides"), [(k, {}) for k in KINDS] + [("finalmlp", {"fs_dense": True})],
                         ids=[*KINDS, "finalmlp-fs_dense"])
@pytest.mark.parametrize("dense_dim", [0, 5])
def test_onnx_export_matches_pytorch(kind: str, overrides: dict, dense_dim: int, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _small(kind, dense_dim, batch_norm=True, **overrides)
    # make the weights non-trivial, BN statistics included, then freeze
    with torch.no_grad():
        model.embedding.weight.normal_()
    model.train()
    for seed in range(3):
        model(*_batch(64, dense_dim, seed=seed))
    model.eval()

    sparse, dense = _batch(4, dense_dim, seed=10)
    names = ["sparse"] + (["dense"] if dense_dim else [])
    args = (sparse, dense) if dense_dim else (sparse,)
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=names,
        output_names=["logit"],
        dynamic_axes={**{n: {0: "batch"} for n in names}, "logit": {0: "batch"}},
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 33):  # batch sizes other than the exported one
        sparse, dense = _batch(n, dense_dim, seed=n)
        feeds = {"sparse": sparse.numpy()}
        if dense_dim:
            feeds["dense"] = dense.numpy()
        (got,) = session.run(None, feeds)
        with torch.no_grad():
            want = model(sparse, dense).numpy()
        assert got.shape == (n,)
        assert np.abs(got - want).max() <= 1e-5


# --------------------------------------------------------------------------------------------- vocabulary


def test_field_vocab_maps_unseen_to_zero_and_round_trips() -> None:
    train = {"user": [7, 3, 7, 11], "weather": ["rain", "sun", "rain", "fog"], "code": [1, "1", 2, "x"]}
    vocab = FieldVocab(["user", "weather", "code"]).fit(train)
    assert vocab.sizes == [4, 4, 5]
    out = vocab.transform({"user": np.array([3, 7, 11, 99]), "weather": ["sun", "snow", "fog", "rain"],
                           "code": ["1", 1, 3, "x"]})  # fmt: skip
    assert out.dtype == np.int64 and out.shape == (4, 3)
    assert out[:, 0].tolist() == [1, 2, 3, 0]  # sorted values 3, 7, 11; 99 unseen
    assert out[:, 1].tolist() == [3, 0, 1, 2]  # fog, rain, sun; snow unseen
    assert out[:, 2].tolist() == [3, 1, 0, 4]  # int 1 and str "1" are different values

    restored = FieldVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored.field_names == vocab.field_names
    assert np.array_equal(restored.transform(train), vocab.transform(train))


def test_field_vocab_min_count_and_order_independence() -> None:
    a = FieldVocab(["f"]).fit([["b", "a", "a", "c"]], min_count=2)
    assert a.sizes == [2] and a.transform([["a", "b", "c"]])[:, 0].tolist() == [1, 0, 0]
    b = FieldVocab(["f"]).fit([["c", "a", "b", "a"]])
    c = FieldVocab(["f"]).fit([["a", "b", "a", "c"]])
    assert b.to_dict() == c.to_dict()


def test_field_vocab_errors() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        FieldVocab(["f"]).transform([["a"]])
    with pytest.raises(ValueError, match="repeat"):
        FieldVocab(["f", "f"])
    with pytest.raises(ValueError, match="missing column"):
        FieldVocab(["f", "g"]).fit({"f": [1]})
    with pytest.raises(ValueError, match="2 columns for 1 fields"):
        FieldVocab(["f"]).fit([[1], [2]])
    with pytest.raises(ValueError, match="differ in length"):
        FieldVocab(["f", "g"]).fit([[1, 2], [3]])
    with pytest.raises(TypeError, match="not str or int"):
        FieldVocab(["f"]).fit([[1.5]])
    with pytest.raises(ValueError, match="twice"):
        FieldVocab.from_dict({"fields": ["f"], "values": [[1, 1]]})


# --------------------------------------------------------------------------------------------- finalmlp

FIELDS = ["user", "item", "weather"]


def _finalmlp(dense_dim: int = 0, **overrides) -> Backbone:
    settings = {"kind": "finalmlp", "embedding_dim": 4, "mlp_hidden": (6,), "mlp2_hidden": (4,), "fs_hidden": (5,),
                "fs1_context": ("user",), "fs2_context": (), "num_heads": 2, "dropout": 0.0, **overrides}
    return build_backbone(SIZES, dense_dim, BackboneConfig(**settings), field_names=FIELDS).eval()


def test_finalmlp_equals_its_formula_computed_by_hand() -> None:
    """Gate = 2·sigmoid(MLP(context)), streams over gated x, logit = w_x·h1 + w_y·h2 + Σ_heads h1_hᵀ W_h h2_h."""
    torch.manual_seed(0)
    model = _finalmlp(dense_dim=3)
    for p in model.parameters():  # move every weight off its init so no term hides at zero
        nn.init.normal_(p, std=0.5)
    sparse, dense = _batch(5, dense_dim=3)
    got = model(sparse, dense)

    def linear(layer: nn.Linear, v: np.ndarray) -> np.ndarray:
        return v @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    table = model.embedding.weight.detach().numpy()
    offsets = np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    x = np.concatenate([table[sparse.numpy() + offsets].reshape(5, -1), dense.numpy()], axis=1)  # (5, 15)
    # stream 1's gate reads the user's own context row; stream 2's a learned constant
    user_ctx = model.gate1.context.weight.detach().numpy()[sparse.numpy()[:, 0]]  # (5, 4)
    g1 = 2 * sigmoid(linear(model.gate1.out, np.maximum(linear(model.gate1.mlp[0], user_ctx), 0)))
    const = np.repeat(model.gate2.bias.detach().numpy(), 5, axis=0)
    g2 = 2 * sigmoid(linear(model.gate2.out, np.maximum(linear(model.gate2.mlp[0], const), 0)))
    h1 = np.maximum(linear(model.deep[0], x * g1), 0)  # (5, 6)
    h2 = np.maximum(linear(model.deep2[0], x * g2), 0)  # (5, 4)
    w = model.fusion.w_xy.detach().numpy().reshape(2, 3, 2)
    bilinear = sum(np.einsum("bi,ij,bj->b", h1[:, 3 * h:3 * h + 3], w[h], h2[:, 2 * h:2 * h + 2]) for h in range(2))
    expected = linear(model.fusion.w_x, h1)[:, 0] + linear(model.fusion.w_y, h2)[:, 0] + bilinear
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_finalmlp_gate_follows_its_context_field_only() -> None:
    """Stream 1's gate depends on the user and nothing else: two rows that differ only in the item get one gate."""
    model = _finalmlp()
    for p in model.gate1.parameters():
        nn.init.normal_(p, std=0.5)
    rows = torch.tensor([[1, 2, 3], [1, 7, 0], [4, 2, 3]])
    gates = model.gate1(rows)
    assert torch.equal(gates[0], gates[1]) and not torch.allclose(gates[0], gates[2])
    assert bool(((gates > 0) & (gates < 2)).all())


def test_finalmlp_fs_dense_gate_reads_context_and_dense_inputs() -> None:
    """With fs_dense each gate is 2·sigmoid(MLP([context ‖ dense])): checked by hand, and rows that share the user
    but differ in the dense inputs (LARR's scene) get different gates."""
    torch.manual_seed(0)
    model = _finalmlp(dense_dim=3, fs_dense=True)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    sparse, dense = _batch(5, dense_dim=3)
    sparse[:, 0] = 2  # one user for every row: only the dense inputs can move gate 1
    g1 = model.gate1(sparse, dense).detach().numpy()

    def linear(layer: nn.Linear, v: np.ndarray) -> np.ndarray:
        return v @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()

    user_ctx = model.gate1.context.weight.detach().numpy()[sparse.numpy()[:, 0]]  # (5, 4)
    inputs = np.concatenate([user_ctx, dense.numpy()], axis=1)  # (5, 7)
    hidden = np.maximum(linear(model.gate1.mlp[0], inputs), 0)
    expected = 2.0 / (1.0 + np.exp(-linear(model.gate1.out, hidden)))
    np.testing.assert_allclose(g1, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(g1[0], g1[1])
    # the constant-context gate (stream 2) varies with the dense inputs too
    g2 = model.gate2(sparse, dense).detach().numpy()
    assert not np.allclose(g2[0], g2[1])


def test_finalmlp_fs_dense_leaves_an_id_only_model_unchanged() -> None:
    """No dense inputs (ID-only): fs_dense builds the same parameters and, from one seed, the same scores."""
    sparse, _ = _batch(6)
    outputs = []
    for fs_dense in (False, True):
        torch.manual_seed(3)
        model = _finalmlp(fs_dense=fs_dense)
        outputs.append((model(sparse), {k: v.shape for k, v in model.state_dict().items()}))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=0)
    assert outputs[0][1] == outputs[1][1]


def test_fs_dense_is_a_finalmlp_option() -> None:
    with pytest.raises(ValueError, match="fs_dense is a finalmlp option"):
        BackboneConfig(kind="deepfm", fs_dense=True)


def test_finalmlp_l2_covers_the_gate_context_tables() -> None:
    model = _finalmlp(embedding_l2=0.05)
    expected = 0.5 * 0.05 * (model.embedding.weight.pow(2).sum() + model.gate1.context.weight.pow(2).sum())
    torch.testing.assert_close(model.regularization(), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fs1_context": ("city",)}, "not a field"),
        ({"num_heads": 4}, "num_heads"),
        ({"mlp2_hidden": ()}, "mlp2_hidden"),
    ],
)
def test_finalmlp_config_errors_name_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _finalmlp(**overrides)


def test_finalmlp_with_named_contexts_needs_field_names() -> None:
    config = BackboneConfig(kind="finalmlp", embedding_dim=4, mlp_hidden=(4,), mlp2_hidden=(4,), fs1_context=("user",))
    with pytest.raises(ValueError, match="field_names"):
        build_backbone(SIZES, 0, config)
