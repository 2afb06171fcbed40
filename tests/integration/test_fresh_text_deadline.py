"""fresh_text_policy deadline on a real tritonserver: a deadline the embedder cannot meet (0 ms) answers fresh texts
with the unseen-text row and counts them, and the late embeddings are stored, so the same texts hit next time; a
generous deadline answers as strict does (the in-process PyTorch model, which the strict server matches)."""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from larr.clients import LarrClient
from larr.contract import FEATURE_CACHE_MODEL, PARAM_FRESH_TEXT_POLICY, PARAM_MISS_DEADLINE_MS
from larr.export.files import read_config
from larr.export.fresh_text_policy import apply_fresh_text_policy
from larr.export.repository import RepositoryOptions, write_repository

pytestmark = pytest.mark.integration

USER, ITEMS = 3, [1, 2, 3]
GENEROUS_MS = 60_000.0  # far beyond any embedder call of the tiny run


@pytest.fixture(scope="module")
def repositories(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """One export with a deadline of 0 ms (never met: a BLS call takes more than one turn of the event loop), and
    a copy switched to a generous deadline, as the benchmarks switch a repository."""
    never = tmp_path_factory.mktemp("larr_repository_deadline_0")
    options = RepositoryOptions(target="cpu", cache_capacity=64, max_candidates=50, fresh_text_policy="deadline",
                                miss_deadline_ms=0.0)
    write_repository(tiny_run.run_dir, never, options)
    generous = tmp_path_factory.mktemp("larr_repository_deadline_generous") / "repository"
    shutil.copytree(never, generous)
    apply_fresh_text_policy(generous, "deadline", miss_deadline_ms=GENEROUS_MS)
    params = read_config(generous / FEATURE_CACHE_MODEL / "config.pbtxt").parameters
    assert (params[PARAM_FRESH_TEXT_POLICY].string_value, float(params[PARAM_MISS_DEADLINE_MS].string_value)) == (
        "deadline", GENEROUS_MS)
    return {"never": never, "generous": generous}


@pytest.fixture(scope="module")
def expected(trained_models):
    """``expected(scene, embedded)``: the in-process CTR of ``scene`` with its texts embedded, or with the unseen row."""

    def score(scene: dict[str, str], embedded: bool) -> np.ndarray:
        rows = trained_models.embed_scene(list(scene.values()))  # (K, D)
        rows = rows if embedded else np.zeros_like(rows)
        return trained_models.score(rows, trained_models.scene_ids(list(scene.values())), USER, ITEMS)

    return score, trained_models.features


def metric(server, name: str, **labels: str) -> float:
    """``larr_feature_cache_<name>`` summed over the series whose labels include ``labels``."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    total = 0.0
    for series_labels, value in re.findall(rf"^larr_feature_cache_{name}\{{([^}}]*)\}} (\S+)$", text, flags=re.M):
        if all(f'{key}="{want}"' in series_labels for key, want in labels.items()):
            total += float(value)
    return total


def wait_for(server, name: str, at_least: float, polls: int = 600, **labels: str) -> float:
    """The metric once it reaches ``at_least`` (Triton refreshes the endpoint about once a second)."""
    value = 0.0
    for _ in range(polls):
        value = metric(server, name, **labels)
        if value >= at_least:
            return value
        time.sleep(0.1)
    pytest.fail(f"{name}{labels} stayed at {value}, expected >= {at_least}")


def test_a_missed_deadline_answers_with_the_unseen_row_and_the_text_hits_next_time(
    triton_server_factory, repositories, expected
) -> None:
    score, features = expected
    server = triton_server_factory(repositories["never"])
    scene = {f: f"deadline fresh text {f}" for f in features}
    k = len(scene)
    with LarrClient(server.grpc_url) as client:
        first = client.score(scene, USER, ITEMS)
        np.testing.assert_allclose(first, score(scene, embedded=False), atol=1e-4, rtol=0)
        assert wait_for(server, "deadline_fallbacks_total", k) == k
        # the embedder call went on after the answer and wrote through to the LRU (the scene table is read-only)
        wait_for(server, "tier_entries", k, tier="lru")
        hits = metric(server, "hits_total")
        second = client.score(scene, USER, ITEMS)
        np.testing.assert_allclose(second, score(scene, embedded=True), atol=1e-4, rtol=0)
        wait_for(server, "hits_total", hits + k)
    assert metric(server, "deadline_fallbacks_total") == k  # the second request waited for nothing


def test_a_generous_deadline_answers_as_strict_does(triton_server_factory, repositories, expected) -> None:
    score, features = expected
    server = triton_server_factory(repositories["generous"])
    scene = {f: f"generous fresh text {f}" for f in features}
    with LarrClient(server.grpc_url) as client:
        got = client.score(scene, USER, ITEMS)
    np.testing.assert_allclose(got, score(scene, embedded=True), atol=1e-4, rtol=0)
    wait_for(server, "misses_total", len(scene))
    assert metric(server, "deadline_fallbacks_total") == 0
