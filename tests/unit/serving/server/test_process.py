"""Unit tests of larr.serving.server.process: start-up errors and teardown, with stand-in processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from larr.serving.server.install import TritonInstall
from larr.serving.server.options import ServerOptions
from larr.serving.server.ports import free_port
from larr.serving.server.process import (
    ServerStartError,
    SupervisorStartError,
    run_triton_server,
    stop,
    supervising,
    wait_ready,
)


def test_run_triton_server_rejects_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        with run_triton_server(tmp_path / "missing", install=TritonInstall(executable=Path("/nonexistent"))):
            pass


def test_wait_ready_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('E model failed to load: boom'); raise SystemExit(3)"], stdout=out
        )
    process.wait()
    options = ServerOptions(model_repository=tmp_path, grpc_port=free_port())
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*boom"):
        wait_ready(options, process, timeout_s=60, where_log=lambda: log.read_text())


def test_a_taken_supervisor_port_is_a_supervisor_start_error_naming_the_port(tmp_path: Path) -> None:
    # A ready server whose supervisor cannot serve its metrics: the start fails as a whole (larr serve then stops
    # the server and exits 1), with the port in the message rather than a bare errno 98.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = ServerOptions(model_repository=tmp_path, admin_key="k", supervisor_port=port)
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        with pytest.raises(SupervisorStartError, match=rf"supervisor's metrics on 127\.0\.0\.1:{port}"):
            with supervising(options, process):
                pytest.fail("the block must not run without its supervisor")
    assert issubclass(SupervisorStartError, ServerStartError)  # callers that catch start-up failures catch this one


IGNORES_SIGINT = """
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
print(1, flush=True)
time.sleep(600)
"""

EXITS_ON_SIGINT = """
import signal, time
# a shell without job control starts background jobs with SIGINT ignored, and children inherit that (`make test &`)
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    print(1, flush=True)  # inside the try: SIGINT may come as soon as this is read
    time.sleep(600)
except KeyboardInterrupt:
    raise SystemExit(0)
"""


def test_stop_kills_a_server_that_ignores_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGINT],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    process.stdout.readline()  # the handler is installed
    stop(process, grace_s=0.5)
    assert process.returncode == -9
    process.stdout.close()


def test_stop_lets_a_server_exit_on_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", EXITS_ON_SIGINT],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    process.stdout.readline()
    stop(process, grace_s=60)
    assert process.returncode == 0
    process.stdout.close()


def test_sigterm_unwinds_with_blocks_so_started_servers_are_stopped(tmp_path: Path) -> None:
    # `larr demo`/`larr bench` stop their tritonserver in a `with` block's exit; SIGTERM must reach it
    marker = tmp_path / "cleaned-up"
    script = (
        "import sys, time\n"
        "from larr.serving.server.process import exit_cleanly_on_sigterm\n"
        "exit_cleanly_on_sigterm()\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').close()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.terminate()
    assert child.wait(timeout=30) == 128 + 15
    assert marker.exists()
