"""fresh_text_policy ``deadline``: misses embedded as under ``strict``, but no request waits past the deadline.

``strict`` makes a request with one fresh text wait for a whole embedder call, behind whatever the embedder
is already doing (on 2 CPU cores: p99 of hundreds of ms at 1 % fresh texts); ``async`` bounds that tail but
answers every fresh text with the unseen-text row, even where the embedder would have answered in time.
``deadline`` takes the embedding when it comes within ``miss_deadline_ms`` and the unseen row otherwise::

    batch = cache.begin(parsed)
    ready, waiting = batch.partition()
    send(ready)
    deadline.start(batch, lambda: send(waiting))  # once: embedded in time, or at the deadline with unseen rows

At the deadline the misses still unanswered get the unseen-text row (``SceneFeatureCache.fall_back_late``,
counted in ``deadline_fallbacks``) and the waiting requests are answered; the embedder call is not
cancelled: it goes on and writes its rows through to the store (larr.serving.miss_embedder), so the same
texts hit next time, and a batch that joined the call still gets them. The clock starts when the execute
that looked the texts up hands them over, not when Triton queued the request. The timer is an injectable
``sleep`` (tests drive it with events, no wall clock). No Triton, no torch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from larr.serving.feature_cache import CacheBatch
from larr.serving.miss_embedder import MissEmbedder


class MissDeadline:
    """Completes a batch's misses through ``misses`` and answers its waiting requests by ``deadline_s`` at the latest.

    ``dim``: D of the unseen-text row. ``late`` counts the batches answered at the deadline (a counter), the
    texts they fell back on are the cache's ``deadline_fallbacks``. ``on_stored`` (e.g. a metrics report) runs when
    a late batch's embedder call has returned and written through: no execute may follow to report it.
    """

    def __init__(self, misses: MissEmbedder, deadline_s: float, dim: int,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, on_stored: Callable[[], None] | None = None):
        if not 0.0 <= deadline_s < float("inf"):
            raise ValueError(f"deadline_s must be a finite number >= 0, got {deadline_s}")
        self.misses = misses
        self.deadline_s = deadline_s
        self.dim = dim
        self.late = 0
        self._sleep = sleep
        self.on_stored = on_stored
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    def start(self, batch: CacheBatch, done: Callable[[], None]) -> asyncio.Task:
        """Complete ``batch`` in a task on the running loop; ``done`` (which answers the waiting requests) runs
        exactly once: when the embeddings are in, when the embedder failed, or at the deadline."""
        task = asyncio.get_running_loop().create_task(self._run(batch, done))
        self._track(task)
        return task

    async def _run(self, batch: CacheBatch, done: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        embedding = loop.create_task(self.misses.complete(batch))  # never raises: failures fail the batch
        self._track(embedding)  # outlives this task when the deadline comes first
        timer = loop.create_task(self._sleep(self.deadline_s))
        try:
            await asyncio.wait((embedding, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if embedding.done():
            done()
            return
        self.late += 1  # late: the unseen row for what is still missing; the call goes on
        self.misses.cache.fall_back_late(batch, self.dim)
        done()
        await embedding
        if self.on_stored is not None:
            self.on_stored()

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Until every batch is answered and every embedder call it started has written through (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
