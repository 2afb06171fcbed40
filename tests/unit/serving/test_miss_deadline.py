"""fresh_text_policy deadline: misses embedded as under strict, answered with the unseen-text row at the deadline,
and stored when the embedder answers late (larr.serving.deadline). Time is driven by events, never the wall clock."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from larr.contract import UNSEEN_SCENE_FILL
from larr.serving.deadline import MissDeadline
from larr.serving.errors import EmbedderError
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.miss_embedder import MissEmbedder
from larr.serving.stores.protocol import scene_key
from larr.text import format_scene_feature

DIM = 3
KNOWN = 7.0  # the stored rows of the texts the store holds from the start


class EventClock:
    """The deadline's ``sleep``: returns when ``expire`` is set, whatever it was asked to wait."""

    def __init__(self):
        self.expire = asyncio.Event()
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.expire.wait()


async def settle() -> None:
    """A few turns of the loop: tasks started by tasks get to run (no time passes: the deadline is an event)."""
    for _ in range(5):
        await asyncio.sleep(0)


def make_cache(scene_cache) -> SceneFeatureCache:
    cache = scene_cache()  # scene features (weather, place)
    known = [scene_key("v1", 0, "sunny", cache.max_text_chars), scene_key("v1", 1, "home", cache.max_text_chars)]
    cache.store.put_many(known, np.full((2, DIM), KNOWN, np.float32))
    return cache


def make(scene_cache, embed, sleep) -> tuple[SceneFeatureCache, MissDeadline]:
    cache = make_cache(scene_cache)
    return cache, MissDeadline(MissEmbedder(cache, embed), deadline_s=0.05, dim=DIM, sleep=sleep)


def snow() -> str:
    return format_scene_feature("weather", "snow")


def test_an_embedding_in_time_is_answered_as_strict_would(scene_cache, gated_embedder) -> None:
    async def scenario():
        clock, embed = EventClock(), gated_embedder()
        cache, deadline = make(scene_cache, embed, clock)
        batch = cache.begin([cache.parse([b"snow", b"home"])])
        answered = []
        deadline.start(batch, lambda: answered.append(batch.results()))
        await settle()
        assert answered == [] and clock.asked == [0.05]  # waiting for the embedder, the deadline armed
        embed.gate.set()  # the embedder answers before the deadline
        await deadline.wait_idle()
        clock.expire.set()  # a deadline after the answer changes nothing
        await settle()
        return cache, deadline, answered

    cache, deadline, answered = asyncio.run(scenario())
    ((scene_emb, _),), = answered  # answered once
    np.testing.assert_array_equal(scene_emb, np.stack([gated_embedder.rows([snow()])[0], np.full(DIM, KNOWN, np.float32)]))
    assert deadline.late == 0 and cache.deadline_fallbacks == 0


def test_past_the_deadline_the_request_gets_the_unseen_row_and_the_late_embedding_is_stored(scene_cache, gated_embedder) -> None:
    async def scenario():
        clock, embed = EventClock(), gated_embedder()
        cache, deadline = make(scene_cache, embed, clock)
        stored: list[int] = []
        deadline.on_stored = lambda: stored.append(len(cache.store))  # the adapter reports its metrics here
        batch = cache.begin([cache.parse([b"snow", b"home"]), cache.parse([b"snow", b"campus"])])
        assert batch.partition() == ([], [0, 1])
        answered = []
        deadline.start(batch, lambda: answered.append(batch.results()))
        await settle()
        clock.expire.set()  # the deadline passes while the embedder is still working
        await settle()
        late_answer, still_pending = list(answered), len(cache.store)
        assert stored == []
        embed.gate.set()  # the embedder answers after all
        await deadline.wait_idle()
        assert stored == [4]  # once the late rows are in the store: the 2 known texts, snow and campus
        return cache, deadline, embed, answered, late_answer, still_pending

    cache, deadline, embed, answered, late_answer, still_pending = asyncio.run(scenario())
    unseen = np.full(DIM, UNSEEN_SCENE_FILL, np.float32)
    ((first, _), (second, _)), = late_answer  # answered at the deadline, once
    np.testing.assert_array_equal(first, np.stack([unseen, np.full(DIM, KNOWN, np.float32)]))  # the hit keeps its row
    np.testing.assert_array_equal(second, np.stack([unseen, unseen]))
    assert len(answered) == 1 and still_pending == 2  # nothing stored at the deadline
    assert deadline.late == 1 and cache.deadline_fallbacks == 2  # "snow" and "campus": one per distinct missing key
    assert len(embed.calls) == 1  # the call was not repeated, nor cancelled: it wrote through when it returned
    again = cache.begin([cache.parse([b"snow", b"campus"])])
    assert again.missing == [] and again.partition() == ([0], [])


def test_a_deadline_of_zero_answers_with_the_unseen_row_at_once_on_the_real_loop(scene_cache, gated_embedder) -> None:
    async def scenario():
        embed = gated_embedder()
        cache = make_cache(scene_cache)
        deadline = MissDeadline(MissEmbedder(cache, embed), deadline_s=0.0, dim=DIM)  # asyncio.sleep(0): one loop turn
        batch = cache.begin([cache.parse([b"snow", b"home"])])
        answered = []
        deadline.start(batch, lambda: answered.append(batch.results()))
        await settle()
        at_deadline = list(answered)
        embed.gate.set()
        await deadline.wait_idle()
        return cache, at_deadline

    cache, at_deadline = asyncio.run(scenario())
    ((scene_emb, _),), = at_deadline
    np.testing.assert_array_equal(scene_emb[0], np.full(DIM, UNSEEN_SCENE_FILL, np.float32))
    assert cache.deadline_fallbacks == 1 and cache.begin([cache.parse([b"snow", b"home"])]).missing == []


def test_an_embedder_failure_before_the_deadline_is_the_requests_error(scene_cache, gated_embedder) -> None:
    async def scenario():
        clock, embed = EventClock(), gated_embedder(fail=EmbedderError("the embedder failed: down"))
        cache, deadline = make(scene_cache, embed, clock)
        batch = cache.begin([cache.parse([b"snow", b"home"])])
        answered = []
        deadline.start(batch, lambda: answered.append(batch.results()))
        embed.gate.set()
        await deadline.wait_idle()
        return cache, answered

    cache, answered = asyncio.run(scenario())
    ((error,),) = answered
    assert isinstance(error, EmbedderError) and "down" in str(error) and cache.deadline_fallbacks == 0


def test_a_late_batch_keeps_the_rows_it_has_and_a_joined_text_arrives_for_the_next(scene_cache, gated_embedder) -> None:
    """Batch A misses "snow"; batch B joins A's call for "snow" and embeds "campus" itself. B's deadline passes
    after its own call answered but before A's: B keeps "campus" and falls back on "snow" alone."""

    async def scenario():
        cache = make_cache(scene_cache)
        gates = {snow(): asyncio.Event(), format_scene_feature("place", "campus"): asyncio.Event()}

        async def embed(texts):
            await gates[texts[0]].wait()
            return gated_embedder.rows(texts)

        misses = MissEmbedder(cache, embed)
        clock_a, clock_b = EventClock(), EventClock()
        deadline_a = MissDeadline(misses, 0.05, DIM, sleep=clock_a)
        deadline_b = MissDeadline(misses, 0.05, DIM, sleep=clock_b)
        a = cache.begin([cache.parse([b"snow", b"home"])])
        deadline_a.start(a, lambda: None)
        await settle()
        b = cache.begin([cache.parse([b"snow", b"campus"])])
        answered = []
        deadline_b.start(b, lambda: answered.append(b.results()))
        await settle()
        gates[format_scene_feature("place", "campus")].set()
        await settle()
        clock_b.expire.set()
        await settle()
        gates[snow()].set()
        await deadline_a.wait_idle()
        await deadline_b.wait_idle()
        return cache, answered

    cache, answered = asyncio.run(scenario())
    ((scene_emb, _),), = answered
    campus = format_scene_feature("place", "campus")
    unseen = np.full(DIM, UNSEEN_SCENE_FILL, np.float32)
    np.testing.assert_array_equal(scene_emb, np.stack([unseen, gated_embedder.rows([campus])[0]]))
    assert cache.deadline_fallbacks == 1
    assert cache.begin([cache.parse([b"snow", b"campus"])]).missing == []


@pytest.mark.parametrize("seconds", [-0.001, float("inf"), float("nan")])
def test_the_deadline_must_be_a_finite_duration(scene_cache, gated_embedder, seconds) -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        MissDeadline(MissEmbedder(make_cache(scene_cache), gated_embedder()), seconds, DIM)
