"""embedder_precision's pair recall: ranked within groups, and the paired int8 - fp32 difference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from embedder_precision import RECALL_K, pair_hits, paired_difference


class TableEmbedder:
    """Fake tokenizer + runtime: text i -> row i of a fixed table of unit vectors."""

    def __init__(self, texts: list[str], vectors: np.ndarray):
        self.index = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def __call__(self, texts):  # the tokenizer
        ids = np.array([[self.index[t]] for t in texts])
        return ids, np.ones_like(ids)

    def run_numpy(self, feeds):  # the runtime
        return self.vectors[feeds[0][:, 0]]


def brute_force_hits(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """For each i: how many right sides score strictly above its own, < k."""
    hits = []
    for i in range(len(left)):
        own = left[i] @ right[i]
        better = sum(1 for j in range(len(right)) if left[i] @ right[j] > own)
        hits.append(better < RECALL_K)
    return np.array(hits)


@pytest.mark.parametrize("group", [40, 20])
def test_pair_hits_rank_each_pair_among_its_group_only(group):
    rng = np.random.default_rng(0)
    m, d = 40, 4  # low dimension: many pairs miss the top 10, so the grouping matters
    texts = [f"l{i}" for i in range(m)] + [f"r{i}" for i in range(m)]
    fake = TableEmbedder(texts, rng.normal(size=(2 * m, d)))
    pairs = {"uu": SimpleNamespace(left=texts[:m], right=texts[m:])}
    hits = pair_hits(fake, fake, pairs, batch=7, group=group)["uu"]
    left, right = fake.vectors[:m], fake.vectors[m:]
    expected = np.concatenate([brute_force_hits(left[g : g + group], right[g : g + group]) for g in range(0, m, group)])
    np.testing.assert_array_equal(hits, expected)
    assert 0 < hits.sum() < m  # the case is not degenerate


def test_a_last_partial_group_is_dropped():
    rng = np.random.default_rng(1)
    texts = [f"l{i}" for i in range(25)] + [f"r{i}" for i in range(25)]
    fake = TableEmbedder(texts, rng.normal(size=(50, 8)))
    pairs = {"ii": SimpleNamespace(left=texts[:25], right=texts[25:])}
    assert len(pair_hits(fake, fake, pairs, batch=64, group=10)["ii"]) == 20


def test_paired_difference_counts_gains_and_losses_with_a_normal_interval():
    fp32 = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    int8 = np.array([1, 0, 0, 1, 1, 0, 0, 1], dtype=bool)
    diff = int8.astype(float) - fp32.astype(float)  # [0, -1, 0, 1, 0, 0, -1, 0]
    out = paired_difference(int8, fp32)
    assert out["mean"] == pytest.approx(-1 / 8)
    assert (out["gained"], out["lost"], out["pairs"]) == (1, 2, 8)
    assert out["ci95"] == pytest.approx(1.96 * np.std(diff, ddof=1) / np.sqrt(8))
