"""CTR metrics on NumPy arrays: AUC, log loss and GAUC (impression-weighted per-user AUC)."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann–Whitney U) statistic; ties get average ranks.

    Returns NaN when ``labels`` hold only one class.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and equal in shape, got {labels.shape} and {scores.shape}")
    positives = labels.sum()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank over each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = 0.5 * (start + end - 1) + 1
    return float((ranks[labels > 0].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC averaged with impression-count weights, over users who have both classes."""
    users = np.asarray(users)
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], np.asarray(labels)[order], np.asarray(scores)[order]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    total, weight = 0.0, 0
    for start, end in zip(np.concatenate([[0], boundaries]), np.concatenate([boundaries, [len(users)]])):
        value = auc(labels[start:end], scores[start:end])
        if not np.isnan(value):
            total += value * (end - start)
            weight += end - start
    return float(total / weight) if weight else float("nan")


def ctr_metrics(users: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    return {
        "auc": round(auc(labels, probabilities), 5),
        "logloss": round(logloss(labels, probabilities), 5),
        "gauc": round(gauc(users, labels, probabilities), 5),
    }
