"""Start a tritonserver, wait until it is ready, watch its stubs, stop it in order and clear what it leaves.

:func:`run_triton_server` is the context manager tests and benchmarks start a server with (free loopback ports,
readiness poll, stop on exit)::

    with run_triton_server("model_repository") as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

``larr serve`` (:mod:`larr.serving.server.serve`) runs the same steps in the foreground. Each server runs in a
session of its own, so a terminal's Ctrl-C reaches the caller, not the server, and the caller stops it in order;
its process group then also holds the stubs a server that died unasked leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from larr.serving.server.install import TritonInstall, locate_triton, server_env
from larr.serving.server.options import ServerOptions, TlsOptions, build_command, host_port
from larr.serving.server.ports import free_ports
from larr.serving.server.supervisor import (
    DEFAULT_POLL_S,
    STUB_EXECUTABLE,
    Stub,
    StubSupervisor,
    find_stubs,
    remove_regions,
)


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with the tail of its log."""


class SupervisorStartError(ServerStartError):
    """The server became ready but its stub supervisor could not start (e.g. its metrics port is taken): the
    start failed as a whole, and the server is stopped; the message names the cause, not the server's log."""


@dataclass(frozen=True)
class RunningServer:
    """A tritonserver started by :func:`run_triton_server`."""

    options: ServerOptions
    process: subprocess.Popen[bytes]
    log_path: Path
    supervisor: StubSupervisor | None = None  # None when started with supervise=False

    @property
    def grpc_url(self) -> str:
        """``host:port`` as ``tritonclient.grpc`` and :class:`larr.clients.LarrClient` take it."""
        return host_port(self.options.host, self.options.grpc_port)

    @property
    def http_url(self) -> str:
        """``host:port`` as ``tritonclient.http`` takes it."""
        return host_port(self.options.host, self.options.http_port)

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{host_port(self.options.host, self.options.metrics_port)}/metrics"

    @property
    def supervisor_metrics_url(self) -> str:
        """Full URL of the supervisor's Prometheus page (``larr_degraded``, ``larr_stub_restarts_total``)."""
        return f"http://{host_port(self.options.host, self.options.supervisor_port)}/metrics"

    @property
    def admin_key(self) -> str:
        return str(self.options.admin_key)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        return _tail(self.log_path, lines)


@contextlib.contextmanager
def run_triton_server(
    model_repository: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    grpc_port: int | None = None,
    http_port: int | None = None,
    metrics_port: int | None = None,
    supervisor_port: int | None = None,
    admin_key: str | None = None,
    log_verbose: int = 0,
    supervise: bool = True,
    supervisor_poll_s: float = DEFAULT_POLL_S,
    extra_args: Sequence[str] = (),
    tls: TlsOptions | None = None,
    startup_timeout_s: float = 120.0,
    shutdown_grace_s: float = 30.0,
    log_path: str | os.PathLike[str] | None = None,
    install: TritonInstall | None = None,
) -> Iterator[RunningServer]:
    """Start tritonserver on ``model_repository``, wait until it is ready, yield it, stop it.

    Ports default to free loopback ports. With ``tls`` the gRPC endpoint needs TLS, and the readiness poll
    uses :meth:`TlsOptions.probe_credentials`. The server's stdout and stderr go to ``log_path`` (default:
    a temporary file, removed after a clean run); a start-up failure raises :class:`ServerStartError`
    with the log's tail and keeps the log.
    """
    check_repository(Path(model_repository))
    install = install or locate_triton()
    free = iter(free_ports(4, host))
    options = ServerOptions(
        model_repository=Path(model_repository),
        host=host,
        grpc_port=grpc_port or next(free),
        http_port=http_port or next(free),
        metrics_port=metrics_port or next(free),
        supervisor_port=supervisor_port or next(free),
        admin_key=admin_key,
        log_verbose=log_verbose,
        supervise=supervise,
        extra_args=tuple(extra_args),
        tls=tls,
    )
    log_file, own_log = _log_file(log_path)
    process = _start_logged(options, install, log_file)
    try:
        wait_ready(options, process, startup_timeout_s, lambda: f"log {log_file}:\n{_tail(log_file, 40)}")
    except BaseException:
        stop(process, shutdown_grace_s)  # the log stays, since the error message points at it
        raise
    at_ready, supervisor = find_stubs(process.pid), None
    try:
        with supervising(options, process, supervisor_poll_s) as supervisor:
            yield RunningServer(options=options, process=process, log_path=log_file, supervisor=supervisor)
    finally:
        stop_and_clear(process, shutdown_grace_s, seen_stubs(at_ready, supervisor))
        if own_log:
            log_file.unlink(missing_ok=True)


def _log_file(log_path: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """Where the server's output goes, and whether it is a temporary file of ours (removed after a clean run)."""
    if log_path is not None:
        return Path(log_path), False
    fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
    os.close(fd)
    return Path(name), True


def _start_logged(options: ServerOptions, install: TritonInstall, log_file: Path) -> subprocess.Popen[bytes]:
    """Start the server in a session of its own with its stdout and stderr in ``log_file``."""
    with open(log_file, "wb") as log:
        return subprocess.Popen(
            build_command(options, install),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(install),
            # Own session: a Ctrl-C in the terminal reaches us, not the server, and we stop it in order.
            start_new_session=True,
        )


def check_repository(model_repository: Path) -> None:
    """Raise FileNotFoundError unless ``model_repository`` is a folder (tritonserver would only say it failed)."""
    if not Path(model_repository).is_dir():
        raise FileNotFoundError(f"model repository {model_repository} is not a directory")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _local_grpc_client(options: ServerOptions):
    """A ``tritonclient.grpc`` client of the server ``options`` describe, from this host (TLS when it has TLS)."""
    import tritonclient.grpc as grpcclient  # deferred: the CLI imports this module just to print --help

    tls = options.tls
    return grpcclient.InferenceServerClient(host_port(options.host, options.grpc_port), **(tls.probe_credentials() if tls else {}))


def wait_ready(
    options: ServerOptions,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    where_log: Callable[[], str],
    poll_s: float = 0.25,
) -> None:
    """Poll ``is_server_ready`` over gRPC until it is true, the process exits, or ``timeout_s`` passes.

    ``where_log`` says where to read the server's log (appended to the error).
    """
    from tritonclient.utils import InferenceServerException  # deferred: the CLI imports this module for --help

    deadline = time.monotonic() + timeout_s
    client = _local_grpc_client(options)
    last_error = "none"
    try:
        while True:
            code = process.poll()
            if code is not None:
                raise ServerStartError(f"tritonserver exited with code {code} during start-up; {where_log()}")
            try:
                # With strict readiness (the default) this is true only once every model has loaded.
                if client.is_server_ready(client_timeout=max(poll_s, 1.0)):
                    return
            except InferenceServerException as error:
                # Kept for the timeout message: a TLS handshake failure would otherwise look like a slow start.
                last_error = str(error)
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"tritonserver was not ready after {timeout_s:.0f} s (last poll error: {last_error}); {where_log()}"
                )
            time.sleep(poll_s)
    finally:
        client.close()


@contextlib.contextmanager
def supervising(
    options: ServerOptions, process: subprocess.Popen[bytes], poll_s: float = DEFAULT_POLL_S, server_restarts: int = 0
) -> Iterator[StubSupervisor | None]:
    """Watch a ready server's stubs and serve the supervisor's metrics while the block runs (None when
    ``options.supervise`` is off). Leave the block before stopping the server: its stubs exit then.
    ``server_restarts``: how often ``larr serve`` started this server again after it died
    (``larr_server_restarts_total``)."""
    if not options.supervise:
        yield None
        return
    from prometheus_client import Counter as PromCounter
    from prometheus_client import start_http_server

    control = _local_grpc_client(options)
    supervisor = StubSupervisor(
        process.pid, control, options.admin_headers_grpc, poll_s=poll_s, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    PromCounter("larr_server_restarts", "times larr serve started tritonserver again after it died unasked",
                registry=supervisor.registry).inc(server_restarts)
    try:
        metrics_http, _ = start_http_server(options.supervisor_port, addr=options.host, registry=supervisor.registry)
    except OSError as error:  # e.g. the port is taken: say which, not just errno 98
        control.close()
        raise SupervisorStartError(
            f"cannot serve the stub supervisor's metrics on {host_port(options.host, options.supervisor_port)}: {error}"
        ) from error
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
        metrics_http.shutdown()
        metrics_http.server_close()
        control.close()


def stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGINT (Triton finishes in-flight requests and unloads models), then SIGKILL the process group."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        # The server runs in its own session (start_new_session), so its group holds it and the stubs.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop_and_clear(process: subprocess.Popen[bytes], grace_s: float, known_stubs: Sequence[Stub]) -> None:
    """:func:`stop`, then clear what a server that died unasked (Triton 2.51 can abort when a stub is killed)
    leaves behind: stubs still running in its process group (re-parented, so only the group finds them; only those
    are killed, since a pid seen earlier may belong to another server's stub by now), and the shared memory of
    ``known_stubs`` (:func:`seen_stubs`: a stub that noticed its server's death exits by itself, but leaves its
    region). A server that exited cleanly has removed both itself."""
    stop(process, grace_s)
    _reap(find_stubs(process.pid, by_group=True))
    remove_regions(stub.shm_region for stub in known_stubs)  # the server is gone: nothing maps them any more


def seen_stubs(at_ready: Sequence[Stub], supervisor: StubSupervisor | None) -> list[Stub]:
    """The stubs a server had when it became ready and, when supervised, every one the supervisor saw since
    (a healed model's stubs are new processes with new shared memory)."""
    return [*at_ready, *(supervisor.known_stubs if supervisor else ())]


def _reap(stubs: Sequence[Stub]) -> None:
    """After a server died: SIGKILL its stubs still running (orphans now, found in its process group) and unlink
    their shared memory, which a new server would not reuse (each stub region is named per process)."""
    for stub in stubs:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{stub.pid}/cmdline").read_bytes().split(b"\0")[0].endswith(STUB_EXECUTABLE.encode()):
                os.kill(stub.pid, signal.SIGKILL)
    remove_regions(stub.shm_region for stub in stubs)


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so ``with`` blocks run: servers the command started are stopped, not orphaned.

    Python's default SIGTERM action ends the process at once, leaving a tritonserver started by ``larr demo`` or
    ``larr bench`` (its own session, so it gets no signal) running with its ports and memory.
    """

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
