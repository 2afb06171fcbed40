"""Context-based sub-sequence selection (larr.data.subsequence), the backbone's target attention and the
long-history synthetic world: known answers and independent computations on tiny fakes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from larr.data.schema import History, load_dataset, write_dataset
from larr.data.subsequence import (
    PADDING,
    UNKNOWN,
    ContextPrototypes,
    HistoryMode,
    UserEvents,
    history_matrix,
    js_divergence,
    k_medoids,
    select_events,
)
from larr.data.synth import SynthConfig, generate
from larr.models.backbone_config import BackboneConfig
from larr.models.backbones import build_backbone
from larr.models.ctr_model import ITEM_FIELD, CTRModelSpec, LarrCTR
from larr.models.layers import TargetAttention

SMALL = SynthConfig(num_users=12, shops_per_category=2, train_rows=200, valid_rows=50, test_rows=60, seed=3)


# --------------------------------------------------------------------------------------------- JS divergence


def test_js_divergence_of_two_given_distributions_is_the_hand_computed_value():
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): KL(p||m) = ln(4/3), KL(q||m) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    assert js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.75 * math.log(4 / 3), abs=1e-12)
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2), m = (1/4, 1/2, 1/4): each KL is 1/2 ln 2
    assert js_divergence([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5 * math.log(2), abs=1e-12)


def test_js_divergence_is_symmetric_zero_for_equal_and_at_most_ln2():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.random(6), rng.random(6)
        assert js_divergence(p, q) == pytest.approx(js_divergence(q, p), abs=1e-12)
        assert 0.0 <= js_divergence(p, q) <= math.log(2)
        assert js_divergence(p, 3.0 * p) == pytest.approx(0.0, abs=1e-12)  # counts are normalised first
    assert js_divergence([2, 0, 0], [0, 5, 1]) == pytest.approx(math.log(2), abs=1e-12)  # disjoint supports


# --------------------------------------------------------------------------------------------- prototypes


def toy_history(contexts: list[tuple[str, str]], items: list[int], users: list[int] | None = None) -> History:
    users = users or [0] * len(items)
    return History(
        user_id=np.asarray(users, dtype=np.int64),
        position=np.arange(len(items), dtype=np.int64),
        item_id=np.asarray(items, dtype=np.int64),
        context_features=("time_slot", "weather"),
        context=[[c[0] for c in contexts], [c[1] for c in contexts]],
    )


def test_k_medoids_splits_two_obvious_groups():
    points = np.array([0.0, 0.1, 0.2, 5.0, 5.1, 5.3])
    medoids, labels = k_medoids(np.abs(points[:, None] - points[None, :]), k=2)
    assert sorted(medoids.tolist()) == [1, 4]  # each group's middle point
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]


def test_prototypes_group_the_contexts_whose_choices_look_alike():
    # items 0-1 are category 0, 2-3 category 1, 4-5 category 2; mornings (any weather) choose categories 0 and 1,
    # nights choose category 2 (plus one category-1 choice), so the JS matrix has two tight groups
    category = np.array([0, 0, 1, 1, 2, 2])
    choices = {("morning", "rain"): [0, 1, 2], ("morning", "snow"): [0, 2, 3], ("morning", "mild"): [1, 0, 3],
               ("night", "rain"): [4, 5, 4], ("night", "snow"): [5, 5, 4], ("night", "mild"): [4, 5, 2]}
    contexts = [c for c, items in choices.items() for _ in items]
    history = toy_history(contexts, [i for items in choices.values() for i in items])
    prototypes = ContextPrototypes.fit(history, category, k=2)
    morning = {prototypes.of(("morning", w)) for w in ("rain", "snow", "mild")}
    night = {prototypes.of(("night", w)) for w in ("rain", "snow", "mild")}
    assert len(morning) == len(night) == 1 and morning != night
    assert prototypes.of(("noon", "rain")) == UNKNOWN


# --------------------------------------------------------------------------------------------- selection


def selection_by_hand(event_prototypes: list[int], target: int, length: int, recent: int) -> list[int]:
    """Walk the history from the newest event back, keeping an event if it is among the last ``recent`` or in
    the target's prototype, until ``length`` are kept."""
    kept = []
    for age, position in enumerate(reversed(range(len(event_prototypes)))):
        if len(kept) == length:
            break
        if age < recent or (target != UNKNOWN and event_prototypes[position] == target):
            kept.append(position)
    return sorted(kept)


def test_context_selection_is_the_prototype_events_plus_the_last_k():
    prototypes = np.array([0, 1, 0, 2, 1, 1, 0, 2])
    assert select_events(prototypes, 0, HistoryMode.CONTEXT, length=10, recent=2).tolist() == [0, 2, 6, 7]
    assert select_events(prototypes, 0, HistoryMode.CONTEXT, length=3, recent=2).tolist() == [2, 6, 7]
    assert select_events(prototypes, UNKNOWN, HistoryMode.CONTEXT, length=10, recent=2).tolist() == [6, 7]
    assert select_events(prototypes, 1, HistoryMode.FULL, length=5, recent=2).tolist() == [3, 4, 5, 6, 7]
    assert select_events(prototypes, 1, HistoryMode.LAST_K, length=5, recent=3).tolist() == [5, 6, 7]
    rng = np.random.default_rng(1)
    for _ in range(200):
        events = rng.integers(-1, 4, size=int(rng.integers(0, 30)))  # -1: an event of an unknown context
        target, length, recent = int(rng.integers(-1, 4)), int(rng.integers(1, 20)), int(rng.integers(0, 8))
        expected = selection_by_hand(events.tolist(), target, length, recent)
        assert select_events(events, target, HistoryMode.CONTEXT, length, recent).tolist() == expected


def test_history_matrix_pads_each_request_selection():
    history = toy_history([("a", "x")] * 3 + [("b", "x")] * 2, items=[10, 11, 12, 13, 14], users=[0, 0, 0, 1, 1])
    events = UserEvents(items=[np.array([10, 11, 12]), np.array([13, 14])], prototypes=[np.array([0, 1, 0]), np.array([1, 1])])
    matrix = history_matrix(events, np.array([0, 1, 0]), np.array([0, 0, 1]), HistoryMode.CONTEXT, length=5, recent=1)
    assert matrix.tolist() == [[10, 12], [14, PADDING], [11, 12]]
    built = UserEvents.build(history, ContextPrototypes(contexts=[("a", "x"), ("b", "x")], prototype=np.array([0, 1]),
                                                        medoids=np.array([0, 1])), num_users=3)
    assert [p.tolist() for p in built.prototypes] == [[0, 0, 0], [1, 1], []]
    assert [i.tolist() for i in built.items] == [[10, 11, 12], [13, 14], []]


# --------------------------------------------------------------------------------------------- target attention


def test_target_attention_is_a_softmax_over_the_valid_events_only():
    torch.manual_seed(0)
    attend = TargetAttention(4)
    query, keys = torch.randn(1, 4), torch.randn(1, 3, 4)
    valid = torch.tensor([[True, False, True]])
    q = query[:, None].expand_as(keys)
    scores = attend.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)[0]  # (3,)
    weights = torch.softmax(scores[[0, 2]], dim=0)
    expected = weights[0] * keys[0, 0] + weights[1] * keys[0, 2]
    torch.testing.assert_close(attend(query, keys, valid)[0], expected)
    assert torch.equal(attend(query, keys, torch.zeros(1, 3, dtype=torch.bool)), torch.zeros(1, 4))


def test_padded_history_events_change_nothing():
    torch.manual_seed(0)
    config = BackboneConfig(kind="dcnv2", embedding_dim=4, cross_layers=1, mlp_hidden=(8,), dropout=0.0)
    model = build_backbone([5, 7, 3], dense_dim=0, config=config, history_field=1).eval()
    with torch.no_grad():
        model.embedding.weight.normal_()  # the default init is tiny; make every row count
    sparse = torch.tensor([[1, 2, 0], [3, 6, 2]])
    short = torch.tensor([[4, 5], [1, -1]])
    padded = torch.tensor([[4, 5, -1, -1], [1, -1, -1, -1]])
    torch.testing.assert_close(model(sparse, None, padded), model(sparse, None, short), rtol=0, atol=1e-6)
    # a row whose history is all padding scores like an empty history, whatever the width
    empty = model(sparse[1:], None, torch.tensor([[-1]]))
    torch.testing.assert_close(model(sparse[1:], None, torch.tensor([[-1, -1, -1]])), empty, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- option off = today


def test_history_off_builds_todays_model_parameter_for_parameter():
    spec = CTRModelSpec(variant="id_only", field_names=["user", "item", "a"], field_vocab_sizes=[4, 6, 3],
                        use_llm=False, backbone={"embedding_dim": 4, "mlp_hidden": (8,)})
    torch.manual_seed(0)
    today = LarrCTR(spec).state_dict()
    torch.manual_seed(0)
    backbone = build_backbone(spec.field_vocab_sizes, 0, spec.backbone_config).state_dict()
    assert today.keys() == {f"backbone.{k}" for k in backbone}
    assert all(torch.equal(today[f"backbone.{k}"], v) for k, v in backbone.items())
    with_history = LarrCTR(replace(spec, history="context"))
    assert with_history.backbone.history_field == ITEM_FIELD
    assert any(k.startswith("backbone.target_attention.") for k in with_history.state_dict())


def test_synth_history_is_additive_and_off_by_default(tmp_path):
    today = generate(SMALL)
    assert today.history is None
    with_history = generate(replace(SMALL, history_length=50))
    assert with_history.items == today.items and with_history.knowledge == today.knowledge
    for split, rows in today.splits.items():
        other = with_history.splits[split]
        assert np.array_equal(other.user_id, rows.user_id) and np.array_equal(other.item_id, rows.item_id)
        assert other.scene == rows.scene  # only the labels gain the context-taste term
    history = with_history.history
    assert len(history) == 50 * SMALL.num_users
    write_dataset(tmp_path / "h", with_history)
    loaded = load_dataset(tmp_path / "h").history
    assert loaded.context_features == ("time_slot", "weather", "place")
    assert np.array_equal(loaded.item_id, history.item_id) and loaded.context == history.context
    assert loaded.context_value("weather", "downpour") == "rain"  # a held-out paraphrase, through the lexicon
    write_dataset(tmp_path / "today", today)
    assert not (tmp_path / "today" / "history.csv").exists() and load_dataset(tmp_path / "today").history is None


# --------------------------------------------------------------------------------------------- stage 3


def test_stage3_trains_with_a_context_subsequence_and_refuses_without_history(tmp_path):
    from scipy.stats import mannwhitneyu

    from larr.errors import MissingInputError
    from larr.models.field_vocab import FieldVocab
    from larr.training.config import CTRConfig, TrainConfig
    from larr.training.ctr import history_field_indices, history_items, predict, run, split_tensors

    write_dataset(tmp_path / "data", generate(replace(SMALL, history_length=20)))
    ctr = CTRConfig(backbone=BackboneConfig(embedding_dim=4, mlp_hidden=(8,), cross_layers=1, dropout=0.0),
                    batch_size=64, max_epochs=1, variants=("id_only",), history="context", history_length=8,
                    history_recent=3, prototypes=3)
    config = TrainConfig(data=str(tmp_path / "data"), threads=1, ctr=ctr)
    selected = history_items(config, load_dataset(tmp_path / "data"))
    assert selected["train"].shape[1] <= 8 and (selected["train"][:, :3] >= 0).all()  # the last 3 always kept
    result = run(config, tmp_path / "run")
    model, vocab = LarrCTR.load(tmp_path / "run" / "ctr" / "id_only")
    assert model.spec.history == "context" and model.backbone.target_attention is not None
    # the reported test AUC is the saved model's, scored with its test sub-sequences: recomputed here as the
    # Mann-Whitney U statistic over (clicked, not clicked) pairs, independent of the project's AUC code
    dataset = load_dataset(tmp_path / "data")
    test = dataset.splits["test"]
    history = history_field_indices(FieldVocab.from_dict(vocab), selected["test"], dataset.info.num_items)
    scores = predict(model, split_tensors(FieldVocab.from_dict(vocab), test, None, history), None)
    clicked = test.label.astype(bool)
    u = mannwhitneyu(scores[clicked], scores[~clicked]).statistic
    # (results are reported to 4 decimals)
    assert result["id_only"]["auc"] == pytest.approx(u / (clicked.sum() * (~clicked).sum()), abs=5e-5)
    write_dataset(tmp_path / "plain", generate(SMALL))
    with pytest.raises(MissingInputError, match="history.csv"):
        history_items(replace(config, data=str(tmp_path / "plain")), load_dataset(tmp_path / "plain"))
