"""AUC / log loss / GAUC against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from larr.training.metrics import auc, gauc, logloss


def test_auc_known_values():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(np.array([0, 1]), np.array([0.2, 0.9])) == 1.0
    assert auc(np.array([0, 1]), np.array([0.9, 0.2])) == 0.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5  # ties count half
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 2)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auc(y, s) == pytest.approx(pairwise)


def test_logloss_and_gauc():
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))
    users = np.array([1, 1, 1, 2, 2, 3])
    labels = np.array([0, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.5])
    # user 1: auc 1 (3 impressions); user 2: auc 0 (2 impressions); user 3: one class, skipped
    assert gauc(users, labels, scores) == pytest.approx((1.0 * 3 + 0.0 * 2) / 5)
