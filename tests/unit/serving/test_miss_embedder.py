"""fresh_text_policy strict off the execute: hits answered at once, misses embedded in a task, a text missed
by two overlapping batches embedded once, failures answered (larr.serving.miss_embedder)."""

from __future__ import annotations

import asyncio

import numpy as np

from larr.serving.errors import EmbedderError
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.stores.protocol import scene_key
from larr.text import format_scene_feature


def make_cache(scene_cache) -> SceneFeatureCache:
    cache = scene_cache()
    known = [scene_key("v1", 0, "sunny", cache.max_text_chars), scene_key("v1", 1, "home", cache.max_text_chars)]
    cache.store.put_many(known, np.full((2, 3), 7.0, np.float32))
    return cache


def test_hits_are_ready_at_once_and_a_text_missed_by_two_overlapping_batches_is_embedded_once(
    scene_cache, gated_embedder
) -> None:
    async def scenario():
        cache = make_cache(scene_cache)
        embed = gated_embedder()
        misses = MissEmbedder(cache, embed)
        answered: list[str] = []

        first = cache.begin([cache.parse([b"sunny", b"home"]), cache.parse([b"snow", b"home"])])
        assert first.partition() == ([0], [1])  # the all-hit request need not wait
        misses.start(first, lambda: answered.append("first"))
        await asyncio.sleep(0)  # the first batch's embedder call is in flight
        second = cache.begin([cache.parse([b"snow", b"campus"])])  # "snow" again: joins, "campus": its own
        misses.start(second, lambda: answered.append("second"))
        await asyncio.sleep(0)
        assert answered == []
        embed.gate.set()
        await misses.wait_idle()
        return cache, embed, misses, first, second, answered

    cache, embed, misses, first, second, answered = asyncio.run(scenario())

    snow, campus = format_scene_feature("weather", "snow"), format_scene_feature("place", "campus")
    assert [sorted(call) for call in embed.calls] == [[snow], [campus]]  # "snow" once, though missed twice
    assert misses.joined == 1 and misses.in_flight == {}
    assert sorted(answered) == ["first", "second"]
    (first_snow, _), = first.results([1])[0:1]
    (second_scene, _), = second.results()
    np.testing.assert_array_equal(first_snow[0], gated_embedder.rows([snow])[0])
    np.testing.assert_array_equal(second_scene, gated_embedder.rows([snow, campus]))
    # written through: the next batch hits
    assert cache.begin([cache.parse([b"snow", b"campus"])]).missing == []


def test_a_failing_embedder_fails_the_waiting_requests_and_the_batches_that_joined_it(scene_cache, gated_embedder) -> None:
    async def scenario():
        cache = make_cache(scene_cache)
        embed = gated_embedder(fail=EmbedderError("the embedder failed: down"))
        misses = MissEmbedder(cache, embed)
        first = cache.begin([cache.parse([b"snow", b"home"])])
        misses.start(first, lambda: None)
        await asyncio.sleep(0)
        second = cache.begin([cache.parse([b"snow", b"home"]), cache.parse([b"sunny", b"home"])])
        misses.start(second, lambda: None)
        embed.gate.set()
        await misses.wait_idle()
        return misses, first, second

    misses, first, second = asyncio.run(scenario())
    for result in (first.results([0])[0], second.results([0])[0]):
        assert isinstance(result, EmbedderError) and "down" in str(result)
    assert misses.in_flight == {}  # nothing stays in flight to be joined later


def test_an_unexpected_error_becomes_an_internal_error_for_the_request(scene_cache, gated_embedder) -> None:
    async def scenario():
        cache = make_cache(scene_cache)
        embed = gated_embedder(fail=RuntimeError("shape mismatch"))
        embed.gate.set()
        misses = MissEmbedder(cache, embed)
        batch = cache.begin([cache.parse([b"snow", b"home"])])
        done = []
        misses.start(batch, lambda: done.append(True))
        await misses.wait_idle()
        return batch, done

    batch, done = asyncio.run(scenario())
    (result,) = batch.results()
    assert done == [True]
    assert isinstance(result, EmbedderError) and not result.client_fault and "shape mismatch" in str(result)
