"""Fault tests: SIGKILL one python-backend stub of the real ``larr`` ensemble under load, in turn for the
feature_cache, embedder and ctr steps. The supervisor (larr.serving.server.supervisor) must notice, take the
model away (readiness turns not-ready) and load it again; failures stop, the metrics say what happened.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from larr.clients import LarrClient
from larr.clients.errors import LarrError, ServerUnavailableError
from larr.data.schema import load_dataset
from larr.export.repository import RepositoryOptions, write_repository
from larr.serving.server.process import RunningServer, run_triton_server
from larr.serving.server.supervisor import DegradedReason, find_stubs

pytestmark = pytest.mark.integration

CLIENTS = 4
DEADLINE_S = 5.0  # each request's gRPC deadline
# The bound: failures stop within this long after the kill.
FAILURES_STOP_WITHIN_S = 10.0
# After the model is back, the load runs this long more to show that every request succeeds.
STEADY_AFTER_HEAL_S = 2.0
FRESH_EVERY = 4  # one request in four carries a never-seen text, so the embedder is on the path too


@pytest.fixture(scope="module")
def repository(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("healing_repository")
    write_repository(tiny_run.run_dir, out, RepositoryOptions(target="cpu", runtime="onnxruntime", device="cpu"))
    return out


# Triton 2.51's python backend aborts the whole server (boost::interprocess::lock_exception, signal 6) when a stub
# is SIGKILLed while it holds the shared-memory lock; no in-server supervisor can heal that — the container's
# restart policy or `larr serve` does (docker/compose.yaml, k8s). About 1 kill in 12 of the feature_cache stub here.
TRITON_ABORT = "boost::interprocess::lock_exception"


@pytest.fixture(scope="module")
def dataset(tiny_run):
    return load_dataset(tiny_run.data_dir)


@dataclass
class Outcome:
    started: float
    error: LarrError | None


@dataclass
class Observations:
    outcomes: list[Outcome] = field(default_factory=list)
    readiness: list[tuple[float, bool]] = field(default_factory=list)
    degraded_seen: set[str] = field(default_factory=set)


def _ready(server: RunningServer) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=DEADLINE_S) as response:
            return response.status == 200
    except OSError:  # an error status (HTTPError) or no server to answer (it aborted: connection refused)
        return False


def _load(server: RunningServer, dataset, stop: threading.Event, seen: Observations, salt: str) -> None:
    """CLIENTS threads scoring test-split scenes (and some fresh texts) until ``stop``; readiness polled."""
    features = dataset.info.scene_features
    client = LarrClient(server.grpc_url, timeout_s=DEADLINE_S)

    def one_client(index: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            row = (index * 997 + n) % len(dataset.test.user_id)
            scene = dict(zip(features, dataset.test.scene_row(row)))
            if n % FRESH_EVERY == 0:
                scene[features[0]] = f"fresh text {salt} {index} {n}"
            started = time.monotonic()
            try:
                client.score(scene, int(dataset.test.user_id[row]), [1, 2, 3])
                seen.outcomes.append(Outcome(started, None))
            except LarrError as error:
                seen.outcomes.append(Outcome(started, error))

    def poll_health() -> None:
        while not stop.is_set():
            seen.readiness.append((time.monotonic(), _ready(server)))
            page = urllib.request.urlopen(server.supervisor_metrics_url, timeout=DEADLINE_S).read().decode()
            for line in page.splitlines():
                if line.startswith("larr_degraded{") and line.endswith(" 1.0"):
                    seen.degraded_seen.add(line.split(" ")[0])
            time.sleep(0.05)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=poll_health))
    for thread in threads:
        thread.start()
    try:
        stop.wait()
    finally:
        for thread in threads:
            thread.join()
        client.close()


@dataclass
class KillRun:
    """One kill under load: what the clients and the health poller saw, and when."""

    seen: Observations
    killed_at: float
    healed_at: float
    restarts_before: int
    restarts_after: int  # read while the server still runs
    degraded_after: dict
    log: str
    aborted: bool  # tritonserver itself died (TRITON_ABORT), so the supervisor had nothing to heal


def _kill_under_load(server: RunningServer, dataset, victim: str) -> KillRun:
    supervisor = server.supervisor
    assert supervisor is not None and supervisor.expected[victim] >= 1
    restarts_before = supervisor.restarts(victim)
    stop, seen = threading.Event(), Observations()
    load = threading.Thread(target=_load, args=(server, dataset, stop, seen, victim))
    load.start()
    try:
        while len(seen.outcomes) < 50:  # warm: the load is flowing
            time.sleep(0.05)
        pid = next(stub.pid for stub in find_stubs(server.process.pid) if stub.model == victim)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # Run until the supervisor has healed the model (the issue allows 10 s of failures) and a while more.
        while supervisor.restarts(victim) == restarts_before and time.monotonic() - killed_at < 6 * FAILURES_STOP_WITHIN_S:
            time.sleep(0.05)
        healed_at = time.monotonic()
        time.sleep(STEADY_AFTER_HEAL_S)
    finally:
        stop.set()
        load.join()
    aborted = server.process.poll() is not None and TRITON_ABORT in server.log_tail(400)
    return KillRun(seen, killed_at, healed_at, restarts_before, supervisor.restarts(victim), supervisor.degraded(),
                   server.log_tail(), aborted)


# A fresh server per attempt, so one fault cannot leak into the next case. When tritonserver itself aborts (Triton
# 2.51, about 1 kill in 12 here) the supervisor was never put to the test, so the case runs once more on a new
# server; only two aborts in a row (about 1 in 150) leave it unproven (xfail).
ATTEMPTS = 2


@pytest.mark.parametrize("victim", ["feature_cache", "embedder", "ctr"])
def test_a_killed_stub_is_noticed_and_its_model_reloaded(repository: Path, dataset, victim: str) -> None:
    for _ in range(ATTEMPTS):
        with run_triton_server(repository, supervisor_poll_s=0.25) as server:
            run = _kill_under_load(server, dataset, victim)
        if not run.aborted:
            break
    else:
        pytest.xfail(f"tritonserver itself aborted ({TRITON_ABORT}) {ATTEMPTS} times when the {victim} stub was "
                     "killed: Triton 2.51's python backend; run_triton_server does not restart it, `larr serve` does "
                     "(test_server.py::test_larr_serve_starts_a_server_that_died_unasked_again)")
    seen, killed_at, healed_at = run.seen, run.killed_at, run.healed_at
    assert run.restarts_after == run.restarts_before + 1, run.log
    assert run.degraded_after == {}
    failures = [o for o in seen.outcomes if o.error is not None]
    # Failures stop: nothing started after the bound fails, and requests did run after it.
    assert all(o.started - killed_at <= FAILURES_STOP_WITHIN_S for o in failures), [str(o.error) for o in failures[-3:]]
    after_heal = [o for o in seen.outcomes if o.started > healed_at]
    assert after_heal and all(o.error is None for o in after_heal)
    # No request sent after the kill waited out its deadline: each failure was an answer (an error status), not
    # silence. A request already inside the stub when it died is never answered by Triton 2.51 (the dead
    # instance's unload never completes), so at most the CLIENTS requests in flight at the kill may time out.
    timed_out = [o for o in failures if isinstance(o.error, ServerUnavailableError) and "DEADLINE" in str(o.error)]
    assert all(o.started < killed_at for o in timed_out), [o.started - killed_at for o in timed_out]
    assert len(timed_out) <= CLIENTS
    # Between the kill and the heal, readiness said not-ready; before the kill and after the heal, ready.
    between = [ok for t, ok in seen.readiness if killed_at < t < healed_at]
    assert False in between
    assert [ok for t, ok in seen.readiness if t > healed_at + 0.5][-3:] == [True] * 3
    # The supervisor's metrics said why while it healed.
    assert f'larr_degraded{{model="{victim}",reason="{DegradedReason.STUB_EXITED}"}}' in seen.degraded_seen


def test_shutdown_after_a_heal_does_not_wait_out_tritons_default_exit_timeout(tiny_run, tmp_path: Path) -> None:
    """After a heal Triton 2.51 never finishes unloading the dead instance, so a stop waits the server's
    exit timeout: the launcher sets it to a few seconds instead of Triton's 30 s default."""
    write_repository(tiny_run.run_dir, tmp_path, RepositoryOptions(target="cpu", runtime="onnxruntime", device="cpu"))
    with run_triton_server(tmp_path, supervisor_poll_s=0.25, shutdown_grace_s=3600) as running:
        assert running.supervisor is not None
        pid = next(stub.pid for stub in find_stubs(running.process.pid) if stub.model == "ctr")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while running.supervisor.restarts("ctr") == 0 and time.monotonic() - killed_at < 6 * FAILURES_STOP_WITHIN_S:
            time.sleep(0.05)
        assert running.supervisor.restarts("ctr") == 1
    # The server exited by itself (SIGINT, then its exit timeout), not by the launcher's SIGKILL.
    assert running.process.returncode != -signal.SIGKILL


def _wait_until(condition, what: str, limit_s: float = 60.0) -> None:
    """Poll ``condition`` (a hang guard, not a speed bound: the limit is far above the few polls it takes)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit_s, f"never happened: {what}"
        time.sleep(0.05)


def test_an_operators_unload_is_left_alone_and_a_reloaded_model_is_watched_again(repository: Path) -> None:
    """An operator with the admin key unloads a model: the supervisor must not bring it back (its stub exited on
    purpose), and once the operator loads it again a killed stub of it is healed as before."""
    import tritonclient.grpc as grpcclient

    with run_triton_server(repository, supervisor_poll_s=0.25) as server:
        supervisor = server.supervisor
        assert supervisor is not None and supervisor.expected.get("embedder") == 1
        admin = server.options.admin_headers_grpc
        control = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            control.unload_model("embedder", headers=admin)
            _wait_until(lambda: "embedder" not in supervisor.expected, "the supervisor stops watching embedder")
            # Several polls later it is still unloaded and nothing was healed or reported degraded. (The server's
            # readiness stays 200 meanwhile: Triton does not count a model unloaded through its API.)
            for _ in range(8):
                time.sleep(supervisor.poll_s)
                assert not control.is_model_ready("embedder")
            assert supervisor.restarts("embedder") == 0 and supervisor.degraded() == {}
            assert not [stub for stub in find_stubs(server.process.pid) if stub.model == "embedder"]

            control.load_model("embedder", headers=admin)
            _wait_until(lambda: supervisor.expected.get("embedder") == 1, "the supervisor watches embedder again")
            assert _ready(server)
            pid = next(stub.pid for stub in find_stubs(server.process.pid) if stub.model == "embedder")
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: supervisor.restarts("embedder") == 1, "the killed embedder stub is healed")
            _wait_until(lambda: _ready(server), "the server is ready again")
        finally:
            control.close()
