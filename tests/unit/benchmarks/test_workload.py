"""Benchmark workload: Zipf draws with a share of never-seen texts, perf_analyzer data, token counts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from larr.benchmarks.workload import (
    CacheSimulator,
    RequestStream,
    ScenePools,
    WorkloadSpec,
    perf_analyzer_data,
    simulate_cache,
    token_bound,
    write_perf_analyzer_data,
    zipf_probabilities,
)
from larr.contract import ITEM_IDS, SCENE_TEXT, USER_ID
from larr.text import format_scene, format_scene_feature
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer

FEATURES = ("weather", "place")
WEATHER = ["heavy rain"] * 5 + ["sunny"] * 3 + ["snow"] * 2 + ["fog"]
PLACE = ["office", "home", "campus", "gym", "office", "home", "office", "park", "mall", "office", "home"]


@pytest.fixture(scope="module")
def pools() -> ScenePools:
    return ScenePools.from_columns(FEATURES, [WEATHER, PLACE], num_users=7, num_items=300)


@pytest.fixture(scope="module")
def tokenizers(scene_tokenizer) -> tuple[EmbeddingTokenizer, EmbeddingTokenizer]:
    """Per feature (max_length 16) and for the whole scene as one text (64), over the same BPE."""
    return scene_tokenizer, EmbeddingTokenizer(scene_tokenizer.tokenizer, EmbeddingInputConfig(max_length=64))


def test_pools_rank_texts_by_training_frequency(pools):
    assert pools.values[0] == ("heavy rain", "sunny", "snow", "fog")
    assert pools.values[1][:2] == ("office", "home")


def test_zipf_probabilities():
    p = zipf_probabilities(5, 1.0)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(np.diff(p) < 0)
    assert p[0] / p[1] == pytest.approx(2.0)
    assert zipf_probabilities(5, 2.0)[0] > p[0]  # a steeper exponent puts more mass on the head
    with pytest.raises(ValueError):
        zipf_probabilities(0, 1.0)


def test_streams_are_deterministic_and_chunking_does_not_matter(pools):
    spec = WorkloadSpec(unseen_share=0.3, candidates=5, seed=7)
    one = RequestStream(pools, spec).take(300)
    other = RequestStream(pools, spec)
    assert other.take(17) + other.take(283) == one
    assert RequestStream(pools, WorkloadSpec(unseen_share=0.3, candidates=5, seed=8)).take(300) != one


def test_requests_follow_the_contract(pools):
    for request in RequestStream(pools, WorkloadSpec(unseen_share=0.2, candidates=12)).take(200):
        assert len(request.scene) == len(FEATURES)
        assert 0 <= request.user_id < pools.num_users
        assert len(request.item_ids) == 12 and len(set(request.item_ids)) == 12
        assert all(0 <= item < pools.num_items for item in request.item_ids)


def test_seen_texts_follow_zipf(pools):
    requests = RequestStream(pools, WorkloadSpec(unseen_share=0.0, zipf_exponent=1.5)).take(3000)
    counts = Counter(r.scene[0] for r in requests)
    expected = zipf_probabilities(4, 1.5) * 3000
    observed = np.array([counts[text] for text in pools.values[0]])
    assert set(counts) == set(pools.values[0])  # no fresh text at share 0
    assert np.all(np.abs(observed - expected) < 0.15 * expected + 20)


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 1.0])
def test_unseen_share(pools, share):
    requests = RequestStream(pools, WorkloadSpec(unseen_share=share)).take(2000)
    seen = set(pools.values[0]) | set(pools.values[1])
    texts = [t for r in requests for t in r.scene]
    fresh = [t for t in texts if t not in seen]
    assert len(fresh) == sum(r.unseen for r in requests)
    assert len(fresh) / len(texts) == pytest.approx(share, abs=0.02)
    assert len(set(fresh)) == len(fresh)  # never sent twice within a stream


def test_shares_differ_only_in_which_texts_are_fresh(pools):
    plain = RequestStream(pools, WorkloadSpec(unseen_share=0.0)).take(500)
    half = RequestStream(pools, WorkloadSpec(unseen_share=0.5)).take(500)
    tenth = RequestStream(pools, WorkloadSpec(unseen_share=0.1)).take(500)
    for a, b, c in zip(plain, half, tenth):
        assert (a.user_id, a.item_ids) == (b.user_id, b.item_ids) == (c.user_id, c.item_ids)
        for k in range(len(FEATURES)):
            assert b.scene[k] == a.scene[k] or b.scene[k].startswith(a.scene[k] + " #")
            if c.scene[k] != a.scene[k]:  # fresh at 10% -> fresh at 50% too (the same coin flips)
                assert b.scene[k] != a.scene[k]


def test_invalid_specs(pools):
    for kwargs in ({"unseen_share": -0.1}, {"unseen_share": 1.5}, {"candidates": 0}, {"zipf_exponent": 0.0}):
        with pytest.raises(ValueError):
            WorkloadSpec(**kwargs)
    with pytest.raises(ValueError, match="items"):
        RequestStream(pools, WorkloadSpec(candidates=301))
    with pytest.raises(ValueError, match="without any seen text"):
        ScenePools(FEATURES, (("a",), ()), 1, 1)


def test_perf_analyzer_data_shapes(pools, tmp_path):
    requests = RequestStream(pools, WorkloadSpec(candidates=4)).take(3)
    data = perf_analyzer_data(requests)
    entry = data["data"][0]
    assert entry[SCENE_TEXT] == {"content": list(requests[0].scene), "shape": [2]}
    assert entry[USER_ID] == [requests[0].user_id]
    assert entry[ITEM_IDS] == {"content": list(requests[0].item_ids), "shape": [4]}
    path = write_perf_analyzer_data(requests, tmp_path / "sub" / "data.json")
    assert json.loads(path.read_text(encoding="utf-8")) == data
    with pytest.raises(ValueError):
        perf_analyzer_data([])


def test_cache_simulation_counts_what_the_server_embeds(pools, tokenizers):
    tokenizer, fulltext = tokenizers
    requests = RequestStream(pools, WorkloadSpec(unseen_share=0.0)).take(50)
    warm, later = requests[:25], requests[25:]
    first, second = simulate_cache([warm, later], FEATURES, tokenizer, fulltext, capacity=1000)
    distinct = {(k, t) for r in warm for k, t in enumerate(r.scene)}
    assert first.misses == len(distinct) and first.hits == 2 * len(warm) - len(distinct)
    missed = [format_scene_feature(FEATURES[k], t) for k, t in distinct]
    expected_tokens = sum(len(ids) for ids in tokenizer.token_ids(missed))
    assert first.miss_tokens == expected_tokens
    new = {(k, t) for r in later for k, t in enumerate(r.scene)} - distinct
    assert second.misses == len(new)
    scenes = [format_scene(FEATURES, r.scene) for r in later]
    assert second.fulltext_tokens == sum(len(ids) for ids in fulltext.token_ids(scenes))
    assert second.hit_rate == pytest.approx(second.hits / (2 * len(later)))


def test_cache_off_misses_every_lookup(pools, tokenizers):
    tokenizer, fulltext = tokenizers
    requests = RequestStream(pools, WorkloadSpec(unseen_share=0.0)).take(40)
    result = CacheSimulator(FEATURES, tokenizer, fulltext, capacity=0).run(requests)
    assert result.hits == 0 and result.misses == 2 * len(requests)
    assert result.miss_tokens == result.cache_off_tokens


def test_token_bound():
    assert token_bound(300, 60) == pytest.approx(5.0)
    assert token_bound(300, 0) is None
    with pytest.raises(ValueError):
        token_bound(-1, 3)
