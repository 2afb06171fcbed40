"""fresh_text_replay: the test split replayed in time order, strict against async."""

from __future__ import annotations

import numpy as np
import pytest
from fresh_text_replay import ReplayModel, fallback_mask, main, replay, replay_order


def test_fallback_mask_follows_first_miss_plus_delay() -> None:
    known = np.array([True, False, False])  # text 0 is in the store from the start
    codes = np.array([[0, 1], [0, 1], [2, 1], [0, 2], [2, 2]])  # (N=5, K=2), requests in replay order
    assert not fallback_mask(codes, known, 0).any()  # delay 0: every miss is there when it is scored
    # text 1 first needed by request 0 -> stored for requests >= 2; text 2 first needed by request 2 -> >= 4
    expected = np.array([[0, 1], [0, 1], [1, 0], [0, 1], [0, 0]], dtype=bool)
    np.testing.assert_array_equal(fallback_mask(codes, known, 2), expected)
    assert fallback_mask(codes, known, 100).sum() == (~known[codes]).sum()  # never in time: every miss falls back
    with pytest.raises(ValueError, match="delay"):
        fallback_mask(codes, known, -1)


def test_replay_order() -> None:
    order, name = replay_order(np.array([5, 3, 3, 9]))
    assert name == "timestamp" and order.tolist() == [1, 2, 0, 3]  # stable among equal stamps
    order, name = replay_order(np.array([5, -1, 3]))
    assert name == "row order" and order.tolist() == [0, 1, 2]


def direct_test_auc(run_dir) -> float:
    """The larr model's test AUC computed the way training does, independently of the replay."""
    import yaml

    from larr.data.schema import load_dataset
    from larr.layout import Variant
    from larr.models.ctr_model import LarrCTR
    from larr.training.ctr import build_llm_features, fit_vocab, load_frozen_embedder, predict, split_tensors
    from larr.training.loop import DistContext
    from larr.training.metrics import auc

    dataset = load_dataset(yaml.safe_load((run_dir / "config.yaml").read_text())["data"])
    embedder, tokenizer = load_frozen_embedder(run_dir, Variant.LARR)
    llm = build_llm_features(dataset, embedder, tokenizer, False, 64, DistContext())
    model, _ = LarrCTR.load(run_dir / "ctr" / "larr")
    data = split_tensors(fit_vocab(dataset), dataset.test, llm.codes["test"])
    return auc(dataset.test.label, predict(model, data, llm.table))


def test_strict_is_the_direct_auc_and_delay_zero_is_strict(tiny_run) -> None:
    model = ReplayModel(tiny_run.run_dir)
    zero, later = replay(model, delays=(0, 64))
    assert zero.order == "timestamp" and zero.requests == len(model.dataset.test)
    assert zero.strict_auc == pytest.approx(direct_test_auc(tiny_run.run_dir), abs=1e-6)
    assert zero.async_auc == zero.strict_auc and zero.fallback_fraction == 0.0
    assert later.strict_auc == zero.strict_auc
    assert 0.0 < later.fallback_fraction <= later.store_misses  # some misses fall back, never a stored text


def test_cli(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "replay.json"
    assert main(["--run", str(tiny_run.run_dir), "--delay", "0", "--out", str(out)]) == 0
    assert "strict AUC" in capsys.readouterr().out
    assert out.exists()
    assert main(["--run", str(tiny_run.run_dir), "--variant", "id_only"]) == 2  # no scene embeddings to drop
