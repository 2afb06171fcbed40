"""A real tritonserver started by run_triton_server on free loopback ports, with the toy python model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from larr.benchmarks.perf import STABILITY_PERCENT
from larr.benchmarks.perf_install import PerfAnalyzerNotFoundError, find_perf_analyzer, perf_analyzer_env
from larr.contract import CTR, ENSEMBLE_NAME, ITEM_IDS, SCENE_TEXT, USER_ID
from larr.serving.server.ports import free_ports
from larr.serving.server.process import RunningServer, ServerStartError, run_triton_server
from larr.serving.server.supervisor import find_stubs

pytestmark = pytest.mark.integration

ADMIN_KEY = "integration-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, toy: Any) -> Iterator[RunningServer]:
    repo = toy.write(tmp_path_factory.mktemp("launcher_repo"))
    with run_triton_server(repo, admin_key=ADMIN_KEY) as running:
        yield running


def _inputs(texts: list[str], user_id: int, items: list[int]) -> list[grpcclient.InferInput]:
    arrays = [
        (SCENE_TEXT, np.array([t.encode() for t in texts], dtype=np.object_), "BYTES"),
        (USER_ID, np.array([user_id], dtype=np.int64), "INT64"),
        (ITEM_IDS, np.array(items, dtype=np.int64), "INT64"),
    ]
    inputs = []
    for name, array, datatype in arrays:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_server_is_ready_and_answers_grpc_inference(server: RunningServer, toy: Any) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert client.is_server_ready()
        assert client.is_model_ready(ENSEMBLE_NAME)
        result = client.infer(ENSEMBLE_NAME, _inputs(["rain", "night"], 7, [1, 2]))
        np.testing.assert_allclose(result.as_numpy(CTR), toy.ctr(["rain", "night"], 7, [1, 2]), rtol=1e-6)
    finally:
        client.close()


def test_metrics_endpoint_serves_triton_and_custom_metrics(server: RunningServer, toy: Any) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.infer(ENSEMBLE_NAME, _inputs(["a", "b"], 1, [1]))
    finally:
        client.close()
    with urllib.request.urlopen(server.metrics_url, timeout=30) as response:
        page = response.read().decode()
    assert "nv_inference_request_success" in page
    counts = [line for line in page.splitlines() if line.startswith(f'{toy.metric}{{model="{toy.step_model}"}}')]
    assert len(counts) == 1 and float(counts[0].split()[-1]) >= 1


def test_admin_protocols_need_the_key_over_grpc(server: RunningServer, toy: Any) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for headers in (None, {"triton-grpc-protocol-admin-key": "wrong"}, {"admin-key": ADMIN_KEY}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.get_model_repository_index(headers=headers)
        index = client.get_model_repository_index(headers=server.options.admin_headers_grpc)
        assert {m.name for m in index.models} == {ENSEMBLE_NAME, toy.step_model}
        # The model config stays open: the client reads the published schema from it.
        assert client.get_model_config(ENSEMBLE_NAME).config.name == ENSEMBLE_NAME
    finally:
        client.close()


def test_admin_apis_need_the_key_over_http(server: RunningServer, toy: Any) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        index = client.get_model_repository_index(headers=server.options.admin_headers_http)
        assert {m["name"] for m in index} == {ENSEMBLE_NAME, toy.step_model}
    finally:
        client.close()


def test_model_control_needs_the_key(server: RunningServer, toy: Any) -> None:
    """Supervised servers allow model control (the supervisor reloads models), behind the admin key."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for headers in (None, {"triton-grpc-protocol-admin-key": "wrong"}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.unload_model(toy.step_model, headers=headers)
        assert client.is_model_ready(toy.step_model)
    finally:
        client.close()


def test_model_control_is_off_even_with_the_key_when_unsupervised(tmp_path: Path, toy: Any) -> None:
    with run_triton_server(toy.write(tmp_path / "repo"), supervise=False) as unsupervised:
        assert unsupervised.supervisor is None
        client = grpcclient.InferenceServerClient(unsupervised.grpc_url)
        try:
            with pytest.raises(InferenceServerException, match="not allowed"):
                client.unload_model(toy.step_model, headers=unsupervised.options.admin_headers_grpc)
            assert client.is_model_ready(toy.step_model)
        finally:
            client.close()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outgoing interface
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_endpoints_listen_on_loopback_only(server: RunningServer) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    options = server.options
    for port in (options.grpc_port, options.http_port, options.metrics_port, options.supervisor_port):
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=5).close()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_perf_analyzer_runs_against_the_server(server: RunningServer, tmp_path: Path) -> None:
    try:
        binary, env = find_perf_analyzer(), perf_analyzer_env()
    except PerfAnalyzerNotFoundError as error:
        pytest.skip(str(error))
    data = tmp_path / "input.json"
    # Every variable-shape input needs content + shape, BYTES included.
    data.write_text(json.dumps({"data": [{
        SCENE_TEXT: {"content": ["heavy rain", "late night"], "shape": [2]},
        USER_ID: [3],
        ITEM_IDS: {"content": [1, 2, 3], "shape": [3]},
    }]}))
    result = subprocess.run(
        [str(binary), "-m", ENSEMBLE_NAME, "-u", server.grpc_url, "-i", "grpc", "--input-data", str(data),
         "--concurrency-range", "1", "--measurement-mode", "count_windows", "--measurement-request-count", "20",
         # any three windows count as stable: this checks that perf_analyzer runs, not how steady a shared machine is
         "--stability-percentage", str(STABILITY_PERCENT)],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Throughput" in result.stdout


def test_teardown_stops_the_server_cleanly(tmp_path: Path, toy: Any) -> None:
    repo = toy.write(tmp_path / "repo")
    with run_triton_server(repo) as running:
        url, process, log_path = running.grpc_url, running.process, running.log_path
        assert log_path.is_file()
    assert process.returncode == 0  # exited on SIGINT by itself, not killed
    assert not log_path.exists()  # the temporary log is removed
    client = grpcclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=5)
    finally:
        client.close()


def _running(pid: int) -> bool:
    """``pid`` is a process that has not exited (a zombie has: this container's init may reap it late)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_teardown_after_the_server_aborted_reaps_its_stubs_and_their_shared_memory(tmp_path: Path, toy: Any) -> None:
    """Triton 2.51 can abort the whole server when a stub dies (the self-healing tests see it): its stubs live on,
    re-parented, holding their shared memory. Leaving run_triton_server's ``with`` must clear them, as `larr serve`
    does before a restart, or every aborted test or benchmark server leaks processes and /dev/shm."""
    repo = toy.write(tmp_path / "repo")
    with run_triton_server(repo) as running:
        stubs = find_stubs(running.process.pid)
        assert stubs and all(Path("/dev/shm", stub.shm_region).exists() for stub in stubs)
        os.kill(running.process.pid, signal.SIGABRT)  # the server alone, as the abort does
        running.process.wait(timeout=60)
        assert [s.pid for s in stubs if _running(s.pid)]  # orphaned, still running
    assert not [s.pid for s in stubs if _running(s.pid)]
    assert not [s.shm_region for s in stubs if Path("/dev/shm", s.shm_region).exists()]


def test_startup_failure_raises_with_the_log_tail_and_keeps_the_log(tmp_path: Path, toy: Any) -> None:
    repo = toy.write(tmp_path / "repo")
    (repo / toy.step_model / "1" / "model.py").write_text("raise ImportError('toy model is broken on purpose')\n")
    with pytest.raises(ServerStartError, match="toy model is broken on purpose") as caught:
        with run_triton_server(repo):
            pass
    match = re.search(r"log (\S+\.log):", str(caught.value))
    assert match is not None
    log_path = Path(match.group(1))
    try:
        assert "toy model is broken on purpose" in log_path.read_text()
    finally:
        log_path.unlink(missing_ok=True)


@dataclass
class _LarrServe:
    """A `larr serve` child process on free ports; ``output`` is its stdout and stderr once it has stopped."""

    process: subprocess.Popen[str]
    grpc_port: int
    supervisor_port: int
    output: str = ""

    def metrics(self) -> str:
        """The supervisor's Prometheus text."""
        return urllib.request.urlopen(f"http://127.0.0.1:{self.supervisor_port}/metrics", timeout=5).read().decode()

    def wait_until(self, condition: Callable[[], bool], what: str, polls: int = 1200) -> None:
        """Poll ``condition`` every 0.05 s; fail naming ``what`` if it never holds or `larr serve` exits first
        (a hang guard, not a timing test)."""
        for _ in range(polls):
            if self.process.poll() is not None:
                raise AssertionError(f"larr serve exited with code {self.process.returncode} before: {what}")
            with contextlib.suppress(OSError, InferenceServerException):
                if condition():
                    return
            time.sleep(0.05)
        raise AssertionError(f"never happened: {what}")

    def stop(self) -> None:
        """SIGTERM, as a container runtime stops it; keeps what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.output, _ = self.process.communicate(timeout=120)


@contextlib.contextmanager
def _larr_serve(repo: Path, supervisor_port: int | None = None) -> Iterator[_LarrServe]:
    """`larr serve` on ``repo``, stopped with SIGTERM when the block ends; a failure inside the block carries
    what it printed (the only record of why a server did not come up). Ports: free ones unless given."""
    grpc_port, http_port, metrics_port, free_supervisor_port = free_ports(4)
    supervisor_port = supervisor_port or free_supervisor_port
    command = [
        sys.executable, "-m", "larr", "serve", "--model-repository", str(repo), "--admin-key", ADMIN_KEY,
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--supervisor-port", str(supervisor_port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    serve = _LarrServe(process, grpc_port, supervisor_port)
    try:
        yield serve
    except BaseException as error:
        serve.stop()
        error.add_note(f"larr serve printed:\n{serve.output}")
        raise
    serve.stop()


def test_larr_serve_heals_a_killed_stub_and_stops_on_sigterm(tmp_path: Path, toy: Any) -> None:
    """The foreground command (the container entrypoint) supervises too, and a SIGTERM stops it all."""
    restarts = f'larr_stub_restarts_total{{model="{toy.step_model}"}}'
    with _larr_serve(toy.write(tmp_path / "repo")) as serve:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{serve.grpc_port}")
        try:
            serve.wait_until(lambda: f"{restarts} 0.0" in serve.metrics(), "the supervisor serves its metrics")
            server_pid = _child_named(serve.process.pid, "tritonserver")
            stub = next(stub for stub in find_stubs(server_pid) if stub.model == toy.step_model)
            os.kill(stub.pid, signal.SIGKILL)
            serve.wait_until(lambda: f"{restarts} 1.0" in serve.metrics(), "the supervisor reloads the model")
            result = client.infer(ENSEMBLE_NAME, _inputs(["rain", "night"], 7, [1, 2]))
            np.testing.assert_allclose(result.as_numpy(CTR), toy.ctr(["rain", "night"], 7, [1, 2]), rtol=1e-6)
            survivors = [server_pid, *(stub.pid for stub in find_stubs(server_pid))]
        finally:
            client.close()
    assert serve.process.returncode == 0, serve.output
    assert f"{toy.step_model} reloaded" in serve.output
    assert not [pid for pid in survivors if Path(f"/proc/{pid}").exists()]  # the server and its stubs are gone


def test_larr_serve_whose_supervisor_cannot_start_says_why_and_leaves_no_server(tmp_path: Path, toy: Any) -> None:
    """The supervisor's metrics port is taken: `larr serve` fails with the port in its message, and stops the
    server it had started (in a session of its own, nothing else would) rather than leave it unsupervised."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with _larr_serve(toy.write(tmp_path / "repo"), supervisor_port=port) as serve:
            serve.process.wait(timeout=300)  # a hang guard: it exits by itself once the server was ready
    assert serve.process.returncode == 1, serve.output
    assert f"cannot serve the stub supervisor's metrics on 127.0.0.1:{port}" in serve.output
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{serve.grpc_port}")
    try:
        with pytest.raises(InferenceServerException):  # nothing listens: the server was stopped
            client.is_server_live(client_timeout=5)
    finally:
        client.close()


def test_larr_serve_starts_a_server_that_died_unasked_again(tmp_path: Path, toy: Any) -> None:
    """Triton 2.51 can abort the whole server when a stub dies (seen in the self-healing tests): `larr serve`
    notices, clears what the dead server left (its stubs and their shared memory), starts it again on the
    same ports and says so in its output and in ``larr_server_restarts_total``; readiness fails in between."""
    with _larr_serve(toy.write(tmp_path / "repo")) as serve:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{serve.grpc_port}")
        try:
            serve.wait_until(lambda: "larr_server_restarts_total 0.0" in serve.metrics(),
                             "the first server is ready and supervised")
            first = _child_named(serve.process.pid, "tritonserver")
            assert os.getsid(first) == first  # a session (and process group) of its own: the group finds its orphans
            old_stubs = find_stubs(first)
            assert old_stubs and all(Path("/dev/shm", stub.shm_region).exists() for stub in old_stubs)
            os.kill(first, signal.SIGABRT)

            def ready() -> bool:
                try:
                    return client.is_server_ready()
                except InferenceServerException:  # nothing listens: not ready
                    return False

            serve.wait_until(lambda: not ready(), "readiness fails while no server runs")
            serve.wait_until(lambda: "larr_server_restarts_total 1.0" in serve.metrics(),
                             "a second server is ready and supervised")
            second = _child_named(serve.process.pid, "tritonserver")
            assert second != first
            serve.wait_until(ready, "the client's channel reconnects (gRPC backs off after refused connections)")
            result = client.infer(ENSEMBLE_NAME, _inputs(["rain", "night"], 7, [1, 2]))
            np.testing.assert_allclose(result.as_numpy(CTR), toy.ctr(["rain", "night"], 7, [1, 2]), rtol=1e-6)
            # the dead server's stubs are gone and their shared memory unlinked
            assert not [s.pid for s in old_stubs if Path(f"/proc/{s.pid}").exists()]
            assert not [s.shm_region for s in old_stubs if Path("/dev/shm", s.shm_region).exists()]
        finally:
            client.close()
    assert serve.process.returncode == 0, serve.output  # a requested stop is not restarted
    assert "tritonserver exited unasked (signal SIGABRT)" in serve.output and "server restart 1" in serve.output


def _child_named(parent: int, name: str) -> int:
    """The pid of ``parent``'s child process whose command name is ``name``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text()
            comm, rest = fields[fields.index("(") + 1 : fields.rindex(")")], fields[fields.rindex(")") + 2 :]
            if comm == name and int(rest.split()[1]) == parent:
                return int(stat.parent.name)
    raise LookupError(f"process {parent} has no child named {name}")
