"""The in-process reference pipeline: a batch scored at once equals its requests scored one at a time (so the
batched overhead measurement compares like with like), and segment timing counts batches as stated."""

from __future__ import annotations

import numpy as np
import pytest

from larr.benchmarks.inprocess import InProcessPipeline, time_segment
from larr.benchmarks.workload import RequestStream, ScenePools, WorkloadSpec
from larr.data.schema import load_dataset


@pytest.fixture(scope="module")
def requests(tiny_run):
    pools = ScenePools.from_dataset(load_dataset(tiny_run.data_dir, splits=("train",)))
    return RequestStream(pools, WorkloadSpec(unseen_share=0.3, candidates=7, seed=5)).take(12)


def test_a_batch_scores_like_its_requests_one_at_a_time(cpu_repository, requests):
    one_by_one = InProcessPipeline(cpu_repository)
    expected = [one_by_one.score(request) for request in requests]
    batched = InProcessPipeline(cpu_repository)  # a fresh cache: the same state the first one started from
    got = batched.score_many(requests)
    assert len(got) == len(requests)
    for served, reference in zip(got, expected):
        assert served.shape == (7,)
        np.testing.assert_allclose(served, reference, rtol=0, atol=1e-5)
    assert batched.cache.stats().misses == one_by_one.cache.stats().misses  # each distinct new text embedded once


def test_segment_timing_scores_every_request_in_batches(cpu_repository, requests):
    pipeline = InProcessPipeline(cpu_repository)
    timing = time_segment(pipeline, requests, batch=5)  # 5 + 5 + 2
    assert (timing.requests, timing.batch) == (12, 5)
    assert timing.seconds > 0 and timing.p99_us >= timing.p50_us > 0
    # every text of the segment was looked up: the next pass hits them all
    before = pipeline.cache.stats().misses
    pipeline.score_many(requests)
    assert pipeline.cache.stats().misses == before
    with pytest.raises(ValueError, match="batch"):
        time_segment(pipeline, requests, batch=0)


def test_threads_score_like_one_thread(cpu_repository, requests):
    """The FastAPI baseline calls the pipeline from its thread pool: same scores, and every text ends up stored."""
    from concurrent.futures import ThreadPoolExecutor

    expected = [InProcessPipeline(cpu_repository).score(request) for request in requests]
    shared = InProcessPipeline(cpu_repository)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(shared.score, requests * 3))
    for served, reference in zip(got, expected * 3):
        np.testing.assert_allclose(served, reference, rtol=0, atol=1e-5)
    before = shared.cache.stats().misses
    shared.score_many(requests)
    assert shared.cache.stats().misses == before


class CountingPipeline:
    """Stands in for InProcessPipeline: records which requests each call scored and how many calls overlapped."""

    def __init__(self, seconds: float):
        import threading

        self.seconds, self.lock = seconds, threading.Lock()
        self.scored: list[int] = []
        self.running = self.most_running = 0

    def score_many(self, chunk):
        import time

        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.seconds)  # releases the GIL, as an ONNX Runtime call does
        with self.lock:
            self.running -= 1
            self.scored.extend(chunk)
        return [None] * len(chunk)


def test_workers_score_every_request_once_with_that_many_calls_in_flight():
    from larr.benchmarks.inprocess import workers_for

    pipeline = CountingPipeline(seconds=0.2)  # long enough that all six threads overlap on a loaded machine
    timing = time_segment(pipeline, list(range(23)), batch=3, workers=workers_for(16, 3))  # 8 batches, 6 threads
    assert sorted(pipeline.scored) == list(range(23))
    assert timing.workers == 6 and pipeline.most_running == 6
    assert timing.requests == 23 and timing.p50_us >= 0.2 * 1e6
    # fewer batches than workers: one thread per batch
    assert time_segment(CountingPipeline(0.0), list(range(4)), batch=2, workers=8).workers == 2
    assert (workers_for(1, 1), workers_for(16, 1), workers_for(16, 5), workers_for(4, 9)) == (1, 16, 4, 1)


def test_an_error_in_a_worker_reaches_the_caller():
    class Failing(CountingPipeline):
        def score_many(self, chunk):
            if 7 in chunk:
                raise RuntimeError("bad request 7")
            return super().score_many(chunk)

    with pytest.raises(RuntimeError, match="bad request 7"):
        time_segment(Failing(0.0), list(range(10)), batch=2, workers=3)


def test_the_pipeline_starts_warm_from_the_repositorys_scene_table_as_the_server_does(cpu_repository, tiny_run):
    """Same cache state as the server: texts seen in training are in the exported scene table, so a fresh pipeline
    answers requests made only of them without a single miss (a cold store would miss every first text)."""
    pools = ScenePools.from_dataset(load_dataset(tiny_run.data_dir, splits=("train",)))
    seen_only = RequestStream(pools, WorkloadSpec(unseen_share=0.0, candidates=7, seed=11)).take(8)
    pipeline = InProcessPipeline(cpu_repository)
    pipeline.score_many(seen_only)
    stats = pipeline.cache.stats()
    distinct = {(feature, text) for request in seen_only for feature, text in zip(pools.features, request.scene)}
    assert stats.misses == 0 and stats.hits == len(distinct)  # one lookup per distinct text of the batch
