"""The fresh-text policy of ``feature_cache``: what a request gets for a scene text no store holds yet.

=========  ==========================================================================================
``strict`` (default) every miss is embedded -- one BLS call for the whole batch, from a task
           (larr.serving.miss_embedder) -- before the requests that need it are answered: exact, but a
           text nobody asked for before puts the LLM on those requests' path
``async``  the miss is answered *now* with the unseen-text row (zeros (D,),
           :data:`larr.contract.UNSEEN_SCENE_FILL`; training showed the model that row,
           ``CTRConfig.scene_dropout``); a :class:`BackgroundEmbedder` embeds the text off the request
           path and writes it to the store, so a later request hits
``deadline`` every miss is embedded as under ``strict``, but a request whose texts are not embedded within
           ``miss_deadline_ms`` of the execute that looked them up is answered with the unseen-text row for
           them; the embedder call goes on and writes through, so a later request hits
           (larr.serving.deadline)
=========  ==========================================================================================

The model config's ``fresh_text_policy`` parameter picks it. The adapter's async ``execute`` does::

    batch = cache.begin(parsed)
    if batch.missing:
        cache.fall_back(batch, dim)                            # unseen rows into the batch, counted
        background.submit(batch.missing_keys, batch.missing)   # pending texts are not queued twice

:meth:`BackgroundEmbedder.submit` schedules the draining coroutine as an asyncio task on the running
loop. Triton's python-backend stub (2.51, the pytriton bundle included) runs ``async def execute``
on one event loop that it keeps running in a thread of its own (``run_forever``), so the task
outlives the execute that started it and shares the loop -- and so the store -- with later
executes, without locks: no two of them run Python at the same time. No Triton, no torch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from larr.choices import ChoiceEnum
from larr.contract import PARAM_FRESH_TEXT_POLICY
from larr.serving.stores.protocol import SceneKey, SceneStore

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]  # M embedder input texts -> (M, D) float32
QUEUE_BATCHES = 16  # the background queue's default bound, in embedder batches (1,024 texts at batch 64)
# deadline: a miss may add this much to a request's latency (the embedder's answer, when later, is still stored)
DEFAULT_MISS_DEADLINE_MS = 50.0
DEFAULT_BUSY_SHARE = 1.0  # the background embedder runs batch after batch while texts are queued


class FreshTextPolicy(ChoiceEnum):
    """The values of the ``fresh_text_policy`` parameter."""

    STRICT = "strict"  # embed every miss before answering (one embedder call per execute)
    ASYNC = "async"  # answer misses with the unseen-text row now; embed them in the background
    DEADLINE = "deadline"  # embed misses as strict; past miss_deadline_ms answer with the unseen-text row

    @classmethod
    def choice_name(cls) -> str:
        return PARAM_FRESH_TEXT_POLICY


class BackgroundEmbedder:
    """Embeds the texts the ``async`` policy answered with the unseen row, off the request path.

    Texts wait in a queue (deduplicated: a key already queued or being embedded is not added again);
    one batch of at most ``max_batch`` texts is embedded at a time with ONE call of ``embed`` (the
    embedder's max batch size, so one BLS request), and written through to ``store``. A failed batch
    is dropped and counted: its texts are still misses, so the next request that needs one queues it again.

    The queue holds at most ``max_queued`` texts (default ``QUEUE_BATCHES`` batches). When fresh texts arrive
    faster than the embedder takes them -- at 10 % fresh, a SmolLM-135M-shaped embedder on 2 CPU cores embeds
    ~50 texts/s while ~900/s arrive -- an unbounded queue grows by the difference for as long as the load
    lasts. Full, it drops its oldest texts (counted in ``dropped``): like a failed batch's, they are still misses,
    and queued again when a request needs them again; the newest texts, the likeliest to recur, stay.

    ``busy_share`` < 1 paces the drain: after a batch that took t seconds it pauses t (1 - s) / s, so the
    background embedder computes at most that share of the wall time. Fresh texts then wait longer (more drop
    from a full queue) and the request path meets a background batch less often: on a machine without a core
    to spare for it, that is what bounds the tail the background work adds to requests.
    """

    def __init__(self, embed: EmbedFn, store: SceneStore, max_batch: int, on_batch: Callable[[], None] | None = None,
                 max_queued: int | None = None, busy_share: float = DEFAULT_BUSY_SHARE,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.monotonic):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0.0 < busy_share <= 1.0:
            raise ValueError(f"busy_share must be in (0, 1], got {busy_share}")
        self.max_queued = QUEUE_BATCHES * max_batch if max_queued is None else max_queued
        if self.max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {self.max_queued}")
        self.embed = embed
        self.store = store
        self.max_batch = max_batch
        self.on_batch = on_batch  # called after every batch (e.g. to report metrics)
        self.queued: dict[SceneKey, str] = {}  # key -> embedder input text, oldest first; at most max_queued
        self.in_flight: dict[SceneKey, str] = {}  # the one batch being embedded now
        self.embedded = 0  # texts embedded and written to the store (monotone: a counter)
        self.failed = 0  # texts whose batch failed (monotone)
        self.dropped = 0  # texts dropped from a full queue, oldest first (monotone)
        self.batches = 0  # embedder calls made
        self.busy_share = busy_share
        self.paused_s = 0.0  # seconds the drain paused to keep to busy_share (monotone)
        self._sleep, self._clock = sleep, clock
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> set[SceneKey]:
        """Keys queued or being embedded."""
        return set(self.queued) | set(self.in_flight)

    def submit(self, keys: Sequence[SceneKey], texts: Sequence[str]) -> int:
        """Queue the (key, embedder input text) pairs not pending already (dropping the oldest queued texts
        beyond ``max_queued``) and make sure a drain task runs on the running event loop. Returns how many were
        queued."""
        added = 0
        for key, text in zip(keys, texts, strict=True):
            if key not in self.queued and key not in self.in_flight:
                self.queued[key] = text
                added += 1
        while len(self.queued) > self.max_queued:
            del self.queued[next(iter(self.queued))]  # the oldest (dicts keep insertion order)
            self.dropped += 1
        if self.queued and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self.drain())
        return added

    async def drain(self) -> None:
        """Embed batches until the queue is empty (texts queued meanwhile are taken by the next batch)."""
        while self.queued:
            started = self._clock()
            await self.embed_next()
            if self.busy_share < 1.0:
                pause = (self._clock() - started) * (1.0 - self.busy_share) / self.busy_share
                self.paused_s += pause
                await self._sleep(pause)

    async def embed_next(self) -> int:
        """One background batch: the first ``max_batch`` queued texts, one ``embed`` call, write-through.
        Returns the number of texts it took."""
        keys = list(itertools.islice(self.queued, self.max_batch))
        self.in_flight = {key: self.queued.pop(key) for key in keys}
        try:
            vectors = await self.embed(list(self.in_flight.values()))  # (M, D)
            if vectors.ndim != 2 or len(vectors) != len(keys):
                raise RuntimeError(f"embedder returned {vectors.shape} for {len(keys)} texts")
            self.store.put_many(keys, vectors)
            self.embedded += len(keys)
        except Exception as error:  # noqa: BLE001 -- no request waits on this batch to carry the error; log, count, go on
            self.failed += len(keys)
            log.warning("background embedding of %d scene texts failed: %s", len(keys), error)
        finally:
            self.in_flight = {}
            self.batches += 1
        if self.on_batch is not None:
            self.on_batch()
        return len(keys)

    async def wait_idle(self) -> None:
        """Until nothing is pending (tests and the in-process replay; a server never waits on it)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def close(self) -> None:
        """Cancel the drain task (from any thread: finalize runs outside the event loop)."""
        task = self._task
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(task.cancel)
