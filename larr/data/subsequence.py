"""Context-based sub-sequence selection of a long user history (Meituan Waimai's context-based fast strategy).

A request's context (e.g. time slot, weather, place) says which part of a long history is relevant: the events
chosen in *similar* contexts, plus the last few for short-term preference. Contexts are grouped into
prototypes once, offline:

* each context's profile is the distribution of an attribute (the category; a price band would be a second
  attribute where a dataset has one) of the items chosen in it, over the whole history;
* two contexts are as similar as the Jensen–Shannon divergence of their profiles is small
  (:func:`js_divergence`, natural log, so it lies in [0, ln 2]);
* :func:`k_medoids` on that divergence matrix groups the contexts into ``k`` prototypes.

Per request, :func:`select_events` keeps the events whose context falls in the target context's prototype plus
the last ``recent`` events, at most ``length`` of them, in time order. It runs once per request, not per
candidate: pure NumPy over one user's events (a few µs; ``larr.benchmarks`` does not time it, the measurement
in benchmarks/studies/companions/results/subseq.json does).

    prototypes = ContextPrototypes.fit(dataset.history, item_categories, k=4)
    events = UserEvents.build(dataset.history, prototypes, dataset.info.num_users)
    chosen = select_events(events.prototypes[user], prototypes.of(context), HistoryMode.CONTEXT, 50, 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from larr.choices import ChoiceEnum
from larr.data.schema import History, Interactions

PADDING = -1  # an empty slot of a padded (N, L) history matrix
UNKNOWN = -1  # the prototype of a context no history event was made in


class HistoryMode(ChoiceEnum):
    """Which history events the CTR model's target attention reads (``ctr.history``).

    * ``off`` — none, and no attention layer: today's model;
    * ``full`` — the last ``history_length`` events;
    * ``last_k`` — the last ``history_recent`` events;
    * ``context`` — the events in the request context's prototype plus the last ``history_recent``, at most
      ``history_length``.
    """

    OFF = "off"
    FULL = "full"
    LAST_K = "last_k"
    CONTEXT = "context"


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence (natural log) of two distributions (normalised here); 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log(a[nonzero] / m[nonzero])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def js_matrix(profiles: np.ndarray) -> np.ndarray:
    """(N, A) non-negative rows -> (N, N) symmetric Jensen–Shannon divergences, zero diagonal."""
    n = len(profiles)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = js_divergence(profiles[i], profiles[j])
    return out


def k_medoids(distance: np.ndarray, k: int, max_iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-medoids on an (N, N) distance matrix -> (medoids (k,), labels (N,) in [0, k)).

    Initialised like PAM's BUILD (the most central point, then greedily the point that lowers the total
    distance most), then alternates assigning each point to its nearest medoid and moving each medoid to the
    member with the smallest summed distance to its cluster, until nothing changes. Ties go to the lower index.
    """
    n = len(distance)
    if not 1 <= k <= n:
        raise ValueError(f"k_medoids needs 1 <= k <= {n} points, got k={k}")
    medoids = [int(np.argmin(distance.sum(axis=1)))]
    while len(medoids) < k:
        nearest = distance[:, medoids].min(axis=1)  # (N,)
        gain = np.maximum(nearest[:, None] - distance, 0.0).sum(axis=0)  # (N,) what adding each point saves
        gain[medoids] = -1.0
        medoids.append(int(np.argmax(gain)))
    medoids_array = np.asarray(medoids)
    for _ in range(max_iterations):
        labels = np.argmin(distance[:, medoids_array], axis=1)
        updated = medoids_array.copy()
        for c in range(k):
            members = np.flatnonzero(labels == c)
            updated[c] = members[np.argmin(distance[np.ix_(members, members)].sum(axis=1))]
        if np.array_equal(updated, medoids_array):
            break
        medoids_array = updated
    return medoids_array, np.argmin(distance[:, medoids_array], axis=1)


@dataclass
class ContextPrototypes:
    """Every context seen in a history and its prototype (cluster of contexts with similar choices)."""

    contexts: list[tuple[str, ...]]  # the distinct contexts, sorted
    prototype: np.ndarray  # (len(contexts),) prototype of each
    medoids: np.ndarray  # (k,) index into contexts of each prototype's medoid

    @classmethod
    def fit(cls, history: History, item_attribute: np.ndarray, k: int) -> "ContextPrototypes":
        """``item_attribute`` (I,) int codes of an item attribute (the category) -> k prototypes of the contexts."""
        keys = history_contexts(history)
        contexts = sorted(set(keys))
        index = {c: i for i, c in enumerate(contexts)}
        profiles = np.zeros((len(contexts), int(item_attribute.max()) + 1))
        np.add.at(profiles, ([index[c] for c in keys], item_attribute[history.item_id]), 1.0)
        medoids, labels = k_medoids(js_matrix(profiles), min(k, len(contexts)))
        return cls(contexts=contexts, prototype=labels, medoids=medoids)

    def __post_init__(self) -> None:
        self._index = {c: int(p) for c, p in zip(self.contexts, self.prototype)}

    def of(self, context: tuple[str, ...]) -> int:
        """The prototype of a context, UNKNOWN (-1) for one the history never saw."""
        return self._index.get(tuple(context), UNKNOWN)


def history_contexts(history: History) -> list[tuple[str, ...]]:
    """Each history event's context: the tuple of its context values."""
    return list(zip(*history.context))


def request_contexts(history: History, rows: Interactions, scene_features: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each interaction row's context in the history's terms: its scene texts of the context features, mapped
    to canonical values through the history's lexicon."""
    columns = [rows.scene[scene_features.index(f)] for f in history.context_features]
    return [
        tuple(history.context_value(f, text) for f, text in zip(history.context_features, texts))
        for texts in zip(*columns)
    ]


@dataclass
class UserEvents:
    """One user's history as arrays, oldest first: ``items[u]`` (H_u,) item ids, ``prototypes[u]`` (H_u,)."""

    items: list[np.ndarray]
    prototypes: list[np.ndarray]

    @classmethod
    def build(cls, history: History, prototypes: ContextPrototypes, num_users: int) -> "UserEvents":
        event_prototypes = np.array([prototypes.of(c) for c in history_contexts(history)], dtype=np.int64)
        starts = np.searchsorted(history.user_id, np.arange(num_users + 1))  # history is sorted by user
        return cls(
            items=[history.item_id[starts[u] : starts[u + 1]] for u in range(num_users)],
            prototypes=[event_prototypes[starts[u] : starts[u + 1]] for u in range(num_users)],
        )


def select_events(event_prototypes: np.ndarray, target: int, mode: HistoryMode, length: int, recent: int) -> np.ndarray:
    """Positions (ascending) of the events one request reads, from the user's (H,) event prototypes, oldest first.

    ``full``: the last ``length``; ``last_k``: the last ``recent``; ``context``: the events whose prototype is
    ``target`` plus the last ``recent``, the most recent ``length`` of them (an UNKNOWN target matches nothing).
    """
    count = len(event_prototypes)
    if mode is HistoryMode.FULL:
        return np.arange(max(count - length, 0), count)
    if mode is HistoryMode.LAST_K:
        return np.arange(max(count - recent, 0), count)
    if mode is HistoryMode.CONTEXT:
        keep = event_prototypes == target if target != UNKNOWN else np.zeros(count, dtype=bool)
        keep[max(count - recent, 0) :] = True
        return np.flatnonzero(keep)[-length:] if length > 0 else np.zeros(0, dtype=np.int64)
    raise ValueError(f"select_events: no selection for history mode '{mode}'")


def history_matrix(events: UserEvents, users: np.ndarray, targets: np.ndarray, mode: HistoryMode, length: int,
                   recent: int) -> np.ndarray:
    """(N,) users and (N,) target prototypes -> (N, L) selected item ids, oldest first, PADDING after.

    L is the longest selection (at most ``length``); a (user, prototype) pair is selected once and reused.
    """
    cache: dict[tuple[int, int], np.ndarray] = {}
    chosen = []
    for user, target in zip(users.tolist(), targets.tolist()):
        key = (user, target)
        if key not in cache:
            cache[key] = events.items[user][select_events(events.prototypes[user], target, mode, length, recent)]
        chosen.append(cache[key])
    width = max((len(c) for c in chosen), default=0)
    out = np.full((len(chosen), max(width, 1)), PADDING, dtype=np.int64)
    for n, items in enumerate(chosen):
        out[n, : len(items)] = items
    return out


__all__ = [
    "ContextPrototypes",
    "HistoryMode",
    "PADDING",
    "UNKNOWN",
    "UserEvents",
    "history_contexts",
    "history_matrix",
    "js_divergence",
    "js_matrix",
    "k_medoids",
    "request_contexts",
    "select_events",
]
