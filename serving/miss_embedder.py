"""fresh_text_policy ``strict`` without holding up the next batch: a batch's misses are embedded in a task.

Triton runs one ``execute`` of a python-backend instance at a time. When the execute itself awaited the
embedder, every request of the *next* dynamic batch -- hits included -- queued behind that LLM call, and
the hits of the *same* batch waited for it too. The ``feature_cache`` adapter therefore answers through
each request's response sender (allowed for non-decoupled models; ``execute`` returns None)::

    batch = cache.begin(parsed)
    ready, waiting = batch.partition()            # requests answerable now / waiting for embeddings
    send(ready)                                   # hits (and errors) leave at once
    misses.start(batch, lambda: send(waiting))    # the embedder call runs as a task; execute returns

so executes overlap while the embedder works, and the embedder's dynamic batcher merges the calls of
several batches. One thing serialised executes gave for free has to be kept by hand: a text missed by
two overlapping batches is embedded once -- the second batch waits for the call the first one started
(``joined``), since the store only has the vector once that call returns.

The task runs on the stub's event loop (the one ``async def execute`` runs on; see
larr.serving.fresh_text), so it shares the store and ``in_flight`` with later executes without locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from larr.serving.errors import EmbedderError, RequestError
from larr.serving.feature_cache import CacheBatch, SceneFeatureCache
from larr.serving.fresh_text import EmbedFn
from larr.serving.stores.protocol import SceneKey

log = logging.getLogger(__name__)


class MissEmbedder:
    """Completes batches whose misses need the embedder, each in its own task (see the module docstring)."""

    def __init__(self, cache: SceneFeatureCache, embed: EmbedFn):
        self.cache = cache
        self.embed = embed
        self.in_flight: dict[SceneKey, asyncio.Future[np.ndarray]] = {}  # key -> (D,) row once embedded
        self.joined = 0  # missing keys answered by another batch's embedder call (monotone: a counter)
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    def start(self, batch: CacheBatch, done: Callable[[], None]) -> asyncio.Task:
        """Complete ``batch`` in a task on the running loop, then call ``done`` (which answers the waiting
        requests). ``done`` runs whatever happens: a failure becomes the waiting requests' error."""

        async def run() -> None:
            try:
                await self.complete(batch)
            finally:
                done()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def complete(self, batch: CacheBatch) -> None:
        """Fill every missing key of ``batch``: embed those no other batch is embedding (ONE embedder call),
        wait for the others. On failure, the batch's waiting requests fail (INTERNAL) and the keys this
        call owned fail for the batches that joined it."""
        loop = asyncio.get_running_loop()
        own = [i for i, key in enumerate(batch.missing_keys) if key not in self.in_flight]
        joined = {key: self.in_flight[key] for key in batch.missing_keys if key in self.in_flight}
        self.joined += len(joined)
        owned = {batch.missing_keys[i]: loop.create_future() for i in own}
        self.in_flight.update(owned)
        try:
            if own:
                rows = await self.embed([batch.missing[i] for i in own])  # (M_own, D)
                keys = list(owned)
                self.cache.complete_keys(batch, keys, rows)  # checks the shape, writes through to the store
                for key, row in zip(keys, rows):
                    owned[key].set_result(row)
            for key, future in joined.items():
                batch.vectors[key] = await future
        except Exception as error:  # noqa: BLE001 -- every waiting request must get an answer
            failure = error if isinstance(error, RequestError) else EmbedderError(f"embedding scene texts failed: {error}")
            if not isinstance(error, RequestError):
                log.exception("completing a batch of %d missing scene texts failed", len(batch.missing_keys))
            for future in owned.values():
                if not future.done():
                    future.set_exception(failure)
                    future.exception()  # retrieved here: a future nobody joined must not warn at exit
            batch.fail(failure)
        finally:
            for key in owned:
                self.in_flight.pop(key, None)

    async def wait_idle(self) -> None:
        """Until no batch is being completed (tests; a server never waits on it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
