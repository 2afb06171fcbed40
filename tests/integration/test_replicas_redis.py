"""Two replicas, one Redis: two real tritonservers on one exported repository (``scene_store="redis"``) share
scene embeddings through a real ``redis-server``; losing Redis fails no request; a restarted replica is warm.

One Redis and two replicas (A and B) live for the whole module; the tests run in file order but each one
makes the state it checks (its own fresh texts), so any one of them also runs alone. Waits are bounded
polls (attempt counts), never wall-clock assertions. Skipped where ``redis-server`` or the ``redis``
client is missing (tests/conftest.py, ``redis_server_factory``).

Float16 tolerance. Redis holds rows as float16 (larr.serving.stores.redis): each component of a unit
vector is off by at most 2^-12 = 2.4e-4, while the replica that embedded the text answers from its own
float32 row. The CTR is sigmoid of a smooth function of those rows (sigmoid's slope is at most 1/4), so
it moves by a small multiple of that rounding; on the tiny run the two replicas' CTRs differed by 2e-7.
We allow ``CTR_FP16_ATOL`` = 1e-4, the tolerance the served-vs-PyTorch parity test uses: 500x what was
measured, yet far below the gap between different scenes' scores, so a wrong row still fails.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from larr.clients import LarrClient
from larr.contract import EMBEDDER_MODEL
from larr.data.schema import load_dataset
from larr.export.repository import RepositoryOptions, write_repository
from larr.serving.metrics import feature_cache_counters
from larr.serving.server.process import RunningServer, run_triton_server

pytestmark = pytest.mark.integration

CTR_FP16_ATOL = 1e-4  # module docstring: float16 rows in Redis vs float32 rows in the embedding replica
RETRY_AFTER_S = 0.2  # how soon a replica asks a Redis that failed again: the reconnect tests poll this long
SOCKET_TIMEOUT_MS = 250  # generous: two servers and the tests share 2 CPU cores; a timeout would be a miss
ITEMS = [1, 2, 3]
POLL_ATTEMPTS = 200  # bounded polls of ~50 ms each


class Replica:
    """One tritonserver on the shared repository, which a test may stop and start again."""

    def __init__(self, repository: Path):
        self.repository = repository
        self._stack = contextlib.ExitStack()
        self.server: RunningServer | None = None

    def start(self) -> None:
        self.server = self._stack.enter_context(run_triton_server(self.repository))

    def stop(self) -> None:
        self._stack.close()  # SIGINT, in-flight requests finish, the stubs exit
        self.server = None

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    def cache_counters(self) -> dict[str, float]:
        """``larr_feature_cache_*`` summed over the feature_cache instances."""
        return feature_cache_counters(self.server.metrics_url)

    def embedder_inferences(self) -> float:
        """Triton's own count of texts the embedder model ran on (BLS calls included)."""
        text = urllib.request.urlopen(self.server.metrics_url, timeout=10).read().decode()
        pattern = rf'^nv_inference_count\{{[^}}]*model="{EMBEDDER_MODEL}"[^}}]*\}} (\S+)$'
        return sum(float(value) for value in re.findall(pattern, text, flags=re.M))


def poll(condition: Callable[[], bool], attempts: int = POLL_ATTEMPTS, pause_s: float = 0.05) -> bool:
    """True as soon as ``condition()`` is; False after ``attempts`` tries (bounded, no wall-clock limit)."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(pause_s)
    return False


@pytest.fixture(scope="module")
def redis_server(redis_server_factory):
    return redis_server_factory()


def export_redis_repository(tiny_run, out: Path, redis_url: str) -> Path:
    """The tiny run exported with the Redis tier at ``redis_url`` (one node or a cluster) and this file's timeouts."""
    options = RepositoryOptions(
        target="cpu", scene_store="redis", redis_url=redis_url,
        redis_retry_after_s=RETRY_AFTER_S, redis_socket_timeout_ms=SOCKET_TIMEOUT_MS,
    )
    write_repository(tiny_run.run_dir, out, options)
    return out


@contextlib.contextmanager
def two_replicas(repository: Path) -> Iterator[tuple[Replica, Replica]]:
    """Replica A and replica B, two servers on the one repository (so on the one Redis)."""
    a, b = Replica(repository), Replica(repository)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def repository(tiny_run, redis_server, tmp_path_factory) -> Path:
    return export_redis_repository(tiny_run, tmp_path_factory.mktemp("larr_repository_redis"), redis_server.url)


@pytest.fixture(scope="module")
def replicas(repository) -> Iterator[tuple[Replica, Replica]]:
    with two_replicas(repository) as pair:
        yield pair


@pytest.fixture(scope="module")
def dataset(tiny_run):
    return load_dataset(tiny_run.data_dir, splits=("test",))


def fresh_scene(features, tag: str) -> dict[str, str]:
    """Texts in no scene table and no earlier request."""
    return {f: f"unique text {tag} {f}" for f in features}


def table_scene(dataset, row: int) -> dict[str, str]:
    """A scene of the dataset: the exporter embedded its texts into the scene table."""
    return dict(zip(dataset.info.scene_features, dataset.test.scene_row(row)))


def test_a_text_embedded_by_one_replica_is_an_l2_hit_on_the_other(replicas, redis_server, dataset):
    a, b = replicas
    features = dataset.info.scene_features
    scene = fresh_scene(features, "17")
    admin = redis_server.admin()
    keys_before = admin.dbsize()
    with LarrClient(a.grpc_url) as client_a:
        ctr_a = client_a.score(scene, 5, ITEMS)
    # A missed every text, embedded them and wrote them through to Redis
    assert admin.dbsize() == keys_before + len(features)

    b_cache, b_embedder = b.cache_counters(), b.embedder_inferences()
    with LarrClient(b.grpc_url) as client_b:
        ctr_b = client_b.score(scene, 5, ITEMS)
    b_cache_after = b.cache_counters()
    assert b.embedder_inferences() == b_embedder, "replica B ran its embedder for texts Redis holds"
    assert b_cache_after.get("misses_total", 0) == b_cache.get("misses_total", 0)
    assert b_cache_after["hits_total"] - b_cache.get("hits_total", 0) == len(features)
    assert b_cache_after["redis_hits_total"] - b_cache.get("redis_hits_total", 0) == len(features)  # from L2
    np.testing.assert_allclose(ctr_b, ctr_a, rtol=0, atol=CTR_FP16_ATOL)


def test_losing_redis_mid_load_fails_no_request_and_the_replica_reconnects(replicas, redis_server, dataset):
    a, _ = replicas
    features = dataset.info.scene_features
    done: list[int] = [0]  # requests answered
    errors: list[BaseException] = []
    enough = threading.Event()
    lock = threading.Lock()

    def worker(worker_id: int) -> None:
        try:
            with LarrClient(a.grpc_url) as client:
                for i in range(500):  # bounded; `enough` ends it far sooner
                    if enough.is_set():
                        return
                    # fresh texts need the embedder (and a Redis write); table texts never do
                    scene = fresh_scene(features, f"load {worker_id}-{i}") if i % 2 else table_scene(dataset, i % 20)
                    ctr = client.score(scene, i, ITEMS)
                    if not np.isfinite(ctr).all():
                        raise AssertionError(f"non-finite CTR {ctr}")
                    with lock:
                        done[0] += 1
        except BaseException as error:  # surfaced below
            errors.append(error)
            enough.set()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert poll(lambda: done[0] >= 10 or bool(errors)), "the load never got going"
        before_loss = a.cache_counters()
        misses_before_loss, errors_before_loss = before_loss["misses_total"], before_loss["redis_errors_total"]
        redis_server.stop()  # SIGTERM, mid-stream
        at_loss = done[0]
        assert poll(lambda: done[0] >= at_loss + 20 or bool(errors)), "requests stalled with Redis down"
    finally:
        enough.set()
        for thread in threads:
            thread.join()
    assert not errors, f"requests failed while Redis was down: {errors[:3]}"
    # while Redis was down, fresh texts were misses that the embedder answered, and the loss is counted
    during = a.cache_counters()
    assert during["misses_total"] > misses_before_loss
    assert during["redis_errors_total"] > errors_before_loss and during["redis_degraded"] == 1

    redis_server.start()  # same port, empty: a replaced Redis node
    admin = redis_server.admin()
    assert admin.dbsize() == 0
    attempt = [0]

    def fresh_text_lands_in_redis() -> bool:
        # a new text each time: one embedded while Redis was still skipped stays in A's L1 only
        attempt[0] += 1
        with LarrClient(a.grpc_url) as client:
            client.score(fresh_scene(features, f"after restart {attempt[0]}"), 1, ITEMS)
        return admin.dbsize() > 0

    assert poll(fresh_text_lands_in_redis), "replica A never wrote to the restarted Redis"
    assert a.cache_counters()["redis_degraded"] == 0


def test_a_restarted_replica_answers_its_first_requests_without_the_embedder(replicas, redis_server, dataset):
    a, b = replicas
    features = dataset.info.scene_features
    in_redis = fresh_scene(features, "written by A")
    admin = redis_server.admin()
    with LarrClient(a.grpc_url) as client:
        keys_before = admin.dbsize()
        client.score(in_redis, 3, ITEMS)
    assert admin.dbsize() == keys_before + len(features)  # Redis is up: A's write landed

    b.stop()
    b.start()
    scenes = [table_scene(dataset, row) for row in range(4)] + [in_redis]
    with LarrClient(b.grpc_url) as client:
        for user, scene in enumerate(scenes):
            client.score(scene, user, ITEMS)
    counters = b.cache_counters()
    assert counters.get("misses_total", 0) == 0, counters
    assert counters["redis_hits_total"] == len(features)  # the dataset's texts came from the table, A's from Redis
    assert b.embedder_inferences() == 0
    assert counters["hits_total"] + counters.get("coalesced_total", 0) == len(scenes) * len(features)
