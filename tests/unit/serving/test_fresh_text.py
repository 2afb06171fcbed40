"""fresh_text_policy async: misses answered with the unseen-text row now, embedded once in the background."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from larr.contract import UNSEEN_SCENE_FILL
from larr.serving.feature_cache import SceneFeatureCache
from larr.serving.fresh_text import QUEUE_BATCHES, BackgroundEmbedder, FreshTextPolicy
from larr.serving.stores.lru import LRUStore
from larr.serving.stores.protocol import SceneKey

DIM = 3


class FakeEmbedder:
    """An async 'embedder' that records its calls; ``gate`` (when set) holds a call in flight until opened."""

    def __init__(self, gate: asyncio.Event | None = None, fail: bool = False):
        self.calls: list[list[str]] = []
        self.gate = gate
        self.fail = fail

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("embedder down")
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)  # (M, D)


def make(scene_cache, embed, max_batch=64) -> tuple[SceneFeatureCache, BackgroundEmbedder]:
    cache = scene_cache(ids=({"heavy rain": 1}, {"office": 1}))  # scene features (weather, place)
    return cache, BackgroundEmbedder(embed, cache.store, max_batch)


def execute(cache: SceneFeatureCache, background: BackgroundEmbedder, requests: list) -> list:
    """What the adapter's execute does under the async policy (it runs on the event loop, never awaits here)."""
    batch = cache.begin([cache.parse(r) for r in requests])
    if batch.missing:
        cache.fall_back(batch, DIM)
        background.submit(batch.missing_keys, batch.missing)
    return batch.results()


def test_policy_parse() -> None:
    assert FreshTextPolicy.parse("async") is FreshTextPolicy.ASYNC
    assert str(FreshTextPolicy.STRICT) == "strict"
    with pytest.raises(ValueError, match="fresh_text_policy"):
        FreshTextPolicy.parse("eventually")


def test_miss_is_unseen_row_now_then_embedded_once_then_a_hit(scene_cache) -> None:
    async def scenario():
        embed = FakeEmbedder()
        cache, background = make(scene_cache, embed)
        (first,) = execute(cache, background, [[b"heavy rain", b"office"]])
        emb, ids = first
        assert emb.shape == (2, DIM) and np.all(emb == UNSEEN_SCENE_FILL)  # answered now, with zeros
        np.testing.assert_array_equal(ids, [1, 1])  # the ID fields are the real ones
        assert cache.fresh_fallbacks == 2 and len(background.pending) == 2
        assert embed.calls == []  # nothing embedded on the request path
        await background.wait_idle()
        assert len(embed.calls) == 1 and len(embed.calls[0]) == 2  # one batch for both texts
        assert background.embedded == 2 and background.pending == set()
        (again,) = execute(cache, background, [[b"heavy rain", b"office"]])
        assert not np.all(again[0] == UNSEEN_SCENE_FILL, axis=1).any()  # the embedded rows
        assert cache.fresh_fallbacks == 2 and cache.stats().hits == 2  # hits, no fallback
        await background.wait_idle()
        assert len(embed.calls) == 1  # no second background call

    asyncio.run(scenario())


def test_concurrent_misses_of_one_text_are_embedded_once(scene_cache) -> None:
    async def scenario():
        gate = asyncio.Event()
        embed = FakeEmbedder(gate)
        cache, background = make(scene_cache, embed)
        execute(cache, background, [[b"snow", b"campus"], [b"snow", b"home"]])  # one execute, "snow" twice
        await asyncio.sleep(0)  # the drain task starts and its batch is in flight (held at the gate)
        assert len(embed.calls) == 1 and len(embed.calls[0]) == 3  # snow, campus, home
        execute(cache, background, [[b"snow", b"campus"]])  # later executes while the batch is in flight
        execute(cache, background, [[b"snow", b"park"]])
        assert len(background.queued) == 1  # only "park" is new; "snow"/"campus" are in flight
        gate.set()
        await background.wait_idle()
        assert [len(c) for c in embed.calls] == [3, 1]  # at most one batch in flight; each text embedded once
        assert background.embedded == 4 and cache.fresh_fallbacks == 4 + 2 + 2
        results = execute(cache, background, [[b"snow", b"park"], [b"snow", b"campus"]])
        assert not any(np.all(emb == UNSEEN_SCENE_FILL, axis=1).any() for emb, _ in results)  # all hits

    asyncio.run(scenario())


def test_background_batches_are_bounded_and_failures_counted(scene_cache) -> None:
    async def scenario():
        embed = FakeEmbedder(fail=True)
        cache, background = make(scene_cache, embed, max_batch=2)
        execute(cache, background, [[b"a", b"b"], [b"c", b"d"], [b"e", b"f"]])
        await background.wait_idle()
        assert [len(c) for c in embed.calls] == [2, 2, 2] and background.failed == 6 and background.embedded == 0
        embed.fail = False  # still misses, so the next request queues them again
        execute(cache, background, [[b"a", b"b"]])
        await background.wait_idle()
        assert background.embedded == 2 and cache.store.stats().entries == 2

    asyncio.run(scenario())


def test_a_full_queue_drops_its_oldest_texts_which_a_later_miss_queues_again(scene_cache) -> None:
    async def scenario():
        gate = asyncio.Event()
        embed = FakeEmbedder(gate=gate)
        cache = scene_cache()
        background = BackgroundEmbedder(embed, cache.store, max_batch=2, max_queued=3)
        execute(cache, background, [[b"w0", b"p0"]])  # both go in flight at once (the drain task starts)...
        await asyncio.sleep(0)
        assert len(embed.calls) == 1 and len(background.in_flight) == 2  # ... and wait at the gate
        # 8 more texts arrive while the embedder is busy: the queue keeps the newest 3, drops the oldest 5
        execute(cache, background, [[f"w{i}".encode(), f"p{i}".encode()] for i in range(1, 5)])
        assert background.dropped == 5 and len(background.queued) == 3
        assert [key.text for key in background.queued] == ["p3", "w4", "p4"]  # newest kept, in arrival order
        gate.set()
        await background.wait_idle()
        assert background.embedded == 2 + 3 and [len(call) for call in embed.calls] == [2, 2, 1]
        stored = [SceneKey("v1", f, t) in cache.store for f, t in ((1, "p3"), (0, "w4"), (1, "p4"), (0, "w1"))]
        assert stored == [True, True, True, False]  # the kept three, not the dropped
        # a dropped text is still a miss: asked for again, it is queued again and embedded
        results = execute(cache, background, [[b"w1", b"p4"]])
        assert np.all(results[0][0][0] == UNSEEN_SCENE_FILL) and not np.all(results[0][0][1] == UNSEEN_SCENE_FILL)
        await background.wait_idle()
        assert len(embed.calls[-1]) == 1 and "w1" in embed.calls[-1][0] and SceneKey("v1", 0, "w1") in cache.store

    asyncio.run(scenario())


def test_the_queue_bound_defaults_to_a_number_of_batches_and_must_be_positive() -> None:
    store = LRUStore(10)
    assert BackgroundEmbedder(FakeEmbedder(), store, max_batch=64).max_queued == QUEUE_BATCHES * 64
    with pytest.raises(ValueError, match="max_queued"):
        BackgroundEmbedder(FakeEmbedder(), store, max_batch=4, max_queued=0)


def test_busy_share_pauses_after_each_batch_for_its_time_times_idle_over_busy() -> None:
    """busy_share 0.25: a batch that took 0.4 s (on the fake clock) is followed by a 1.2 s pause, so the embedder
    computes a quarter of the wall time; at 1 (the default) it never pauses."""
    clock = [100.0]
    pauses: list[float] = []

    async def embed(texts):  # each call 'takes' 0.1 s per text on the fake clock
        clock[0] += 0.1 * len(texts)
        return np.ones((len(texts), DIM), dtype=np.float32)

    async def sleep(seconds):
        pauses.append(seconds)
        clock[0] += seconds

    async def scenario(busy_share):
        store = LRUStore(100)
        background = BackgroundEmbedder(embed, store, max_batch=4, busy_share=busy_share, sleep=sleep, clock=lambda: clock[0])
        keys = [SceneKey("v1", "weather", f"t{i}") for i in range(6)]
        background.submit(keys, [f"t{i}" for i in range(6)])  # batches of 4 and 2
        await background.wait_idle()
        return background, store

    background, store = asyncio.run(scenario(0.25))
    assert pauses == pytest.approx([0.4 * 3, 0.2 * 3])
    assert background.paused_s == pytest.approx(1.8) and background.embedded == 6 and len(store) == 6
    busy = 0.4 + 0.2
    assert busy / (busy + background.paused_s) == pytest.approx(0.25)
    pauses.clear()
    background, _ = asyncio.run(scenario(1.0))
    assert pauses == [] and background.paused_s == 0.0 and background.embedded == 6


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_busy_share_must_be_a_share(share) -> None:
    with pytest.raises(ValueError, match="busy_share"):
        BackgroundEmbedder(FakeEmbedder(), LRUStore(10), 4, busy_share=share)
