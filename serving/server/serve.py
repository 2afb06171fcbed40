"""``larr serve``: tritonserver in the foreground, its stubs supervised, started again when it dies unasked::

    larr serve --model-repository model_repository          # Ctrl-C stops it

:func:`serve_main` resolves the options and prints the endpoints, then runs rounds of start -> watch -> restart
policy (:func:`_serve`) while SIGINT/SIGTERM are forwarded to the server (:class:`_ForwardedSignals`). Whatever
ends the command, it leaves no server behind: the server runs in a session of its own, so nothing else would
stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from larr.serving.server.install import TritonInstall, TritonNotFoundError, locate_triton, server_env
from larr.serving.server.options import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_HEADER,
    ADMIN_PROTOCOLS,
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_SUPERVISOR_PORT,
    GRPC_RESTRICTED_HEADER_PREFIX,
    ServerOptions,
    TlsOptions,
    build_command,
    host_port,
)
from larr.serving.server.process import (
    ServerStartError,
    SupervisorStartError,
    check_repository,
    seen_stubs,
    stop_and_clear,
    supervising,
    wait_ready,
)
from larr.serving.server.supervisor import Stub, StubSupervisor, find_stubs

# `larr serve` starts a server that died unasked again after this pause, doubled (up to the maximum) while it keeps
# dying within SERVER_STABLE_S of being ready.
SERVER_RESTART_BACKOFF_S = 1.0
SERVER_RESTART_MAX_BACKOFF_S = 60.0
SERVER_STABLE_S = 60.0
# A stop waits this much longer than the server's own exit timeout before it kills the process group.
_STOP_MARGIN_S = 5


def serve_main(
    model_repository: str | os.PathLike[str],
    host: str = "127.0.0.1",
    grpc_port: int = DEFAULT_GRPC_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    metrics_port: int = DEFAULT_METRICS_PORT,
    admin_key: str | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    supervisor_port: int = DEFAULT_SUPERVISOR_PORT,
    supervise: bool = True,
    startup_timeout_s: float = 600.0,
) -> int:
    """Run tritonserver in the foreground for ``larr serve``; returns its exit code.

    ``admin_key`` None: ``$LARR_ADMIN_KEY`` (:data:`ADMIN_KEY_ENV`, read from ``environ``, default
    ``os.environ``), else a random key. Prints the endpoints first, and the admin key only when it was
    generated (a given one would otherwise land in the logs); once the server is ready, supervises its
    stubs (see :mod:`larr.serving.server.supervisor`). SIGINT/SIGTERM sent to this process stop the supervisor
    and are forwarded to the server, which then drains in-flight requests (at most ``exit_timeout_s``) and
    exits. The server runs in a session of its own, as under :func:`~larr.serving.server.process.run_triton_server`:
    a terminal Ctrl-C reaches it only through this process, and a server that dies unasked is cleared the same
    way (its process group holds the stubs it leaves behind).
    """
    admin_key, key_source = _admin_key(admin_key, os.environ if environ is None else environ)
    try:
        if admin_key is not None and not admin_key:
            raise ValueError(f"the admin key from {key_source} is empty")
        check_repository(Path(model_repository))
        options = ServerOptions(
            model_repository=Path(model_repository),
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            supervisor_port=supervisor_port,
            admin_key=admin_key,
            supervise=supervise,
            tls=TlsOptions.from_files(tls_cert, tls_key, tls_ca),
        )
        install = locate_triton()
    except (FileNotFoundError, ValueError, TritonNotFoundError) as error:
        print(f"larr serve: {error}", file=sys.stderr)
        return 2
    _print_endpoints(options, install, key_source=None if admin_key is None else key_source)
    with _ForwardedSignals() as signals:
        try:
            return _serve(options, install, signals, startup_timeout_s)
        except SupervisorStartError as error:  # the supervisor could not start: no unsupervised server is left
            print(f"larr serve: {error}", file=sys.stderr)
            return 1
        finally:
            _leave_no_server(signals.server, options.exit_timeout_s + _STOP_MARGIN_S)


def _admin_key(given: str | None, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The admin key (None: generate one) and where it came from: the flag wins over :data:`ADMIN_KEY_ENV`."""
    if given is None and ADMIN_KEY_ENV in environ:
        return environ[ADMIN_KEY_ENV], f"${ADMIN_KEY_ENV}"
    return given, "--admin-key"


def _print_endpoints(options: ServerOptions, install: TritonInstall, key_source: str | None) -> None:
    """What is served where. The admin key is shown only when generated (``key_source`` None): a given one
    would otherwise land in the logs."""
    host, tls = options.host, options.tls
    supervised = f"http://{host_port(host, options.supervisor_port)}/metrics" if options.supervise else "off (--no-supervise)"
    grpc_security = "plaintext" if tls is None else ("mutual TLS" if tls.mutual else "TLS")
    shown_key = options.admin_key if key_source is None else f"(from {key_source})"
    print(
        f"tritonserver {install.executable}\n"
        f"  model repository  {options.model_repository.resolve()}\n"
        f"  gRPC              {host_port(host, options.grpc_port)}  ({grpc_security})\n"
        f"  HTTP              http://{host_port(host, options.http_port)}\n"
        f"  metrics           http://{host_port(host, options.metrics_port)}/metrics\n"
        f"  stub supervisor   {supervised}\n"
        f"  admin key         {shown_key}  (restricted: {', '.join(ADMIN_PROTOCOLS)}; header "
        f"'{GRPC_RESTRICTED_HEADER_PREFIX}{ADMIN_KEY_HEADER}' over gRPC, '{ADMIN_KEY_HEADER}' over HTTP)",
        flush=True,
    )


class _ForwardedSignals:
    """While the block runs, SIGINT/SIGTERM mark the command as stopping, stop the supervisor and reach the
    server of this round (which then drains and exits); the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.server: subprocess.Popen[bytes] | None = None  # the tritonserver process of this round
        self.supervisor: StubSupervisor | None = None  # its supervisor, once it is ready
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _ForwardedSignals:
        self._previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()  # first, so that neither the stubs' planned exit nor the server's is "healed"
        supervisor, server = self.supervisor, self.server
        if supervisor is not None:
            supervisor.request_stop()
        if server is not None and server.poll() is None:
            server.send_signal(signum)


@dataclass(frozen=True)
class _Exited:
    """How a ready server's round ended."""

    code: int  # the server's exit code (negative: the signal that ended it)
    uptime_s: float  # how long it had been ready
    stubs: list[Stub]  # every stub it ran: their shared memory is cleared before a restart


def _serve(options: ServerOptions, install: TritonInstall, signals: _ForwardedSignals, startup_timeout_s: float) -> int:
    """Rounds of start -> watch -> restart policy, until the server exits asked to, cannot start, or is not
    supervised; returns the command's exit code."""
    restarts, backoff_s = 0, SERVER_RESTART_BACKOFF_S
    while True:
        process = _start(options, install, signals)
        not_started = _wait_started(options, process, signals, startup_timeout_s)
        if not_started is not None:
            return not_started
        exited = _watch(options, process, signals, restarts)
        if signals.stopping.is_set() or exited.code == 0 or not options.supervise:
            return exited.code
        # The server died unasked (Triton 2.51's python backend can abort the whole process when a stub
        # dies): start it again, as a container restart policy would, without dropping the endpoints for
        # longer than a start. Crashing again soon after a start backs off, up to SERVER_RESTART_MAX_BACKOFF_S.
        stop_and_clear(process, options.exit_timeout_s + _STOP_MARGIN_S, exited.stubs)
        backoff_s = restart_pause(restarts, exited.uptime_s, backoff_s)
        restarts += 1
        print(f"larr serve: tritonserver exited unasked ({_describe_exit(exited.code)}); starting it again in "
              f"{backoff_s:.0f} s (server restart {restarts})", file=sys.stderr, flush=True)
        if signals.stopping.wait(backoff_s):
            return 0  # asked to stop while nothing ran: a clean stop


def _start(options: ServerOptions, install: TritonInstall, signals: _ForwardedSignals) -> subprocess.Popen[bytes]:
    """Start this round's server, its output on ours, in a session of its own."""
    process = subprocess.Popen(build_command(options, install), env=server_env(install), start_new_session=True)
    signals.server = process
    if signals.stopping.is_set():  # the signal came before it could be forwarded to this server
        process.send_signal(signal.SIGINT)
    return process


def _wait_started(
    options: ServerOptions, process: subprocess.Popen[bytes], signals: _ForwardedSignals, timeout_s: float
) -> int | None:
    """None once the server is ready; else the command's exit code, the server stopped and cleared."""
    try:
        wait_ready(options, process, timeout_s, lambda: "its log is above")
    except ServerStartError as error:
        code = process.poll()
        # stops a server not ready in time; clears what one that died while starting left behind
        stop_and_clear(process, options.exit_timeout_s + _STOP_MARGIN_S, known_stubs=())
        if code == 0 or signals.stopping.is_set():  # it was asked to stop (a forwarded signal) before it was ready
            return 0
        print(f"larr serve: {error}", file=sys.stderr)
        # a server that cannot start is not restarted: the same start would fail again
        return 1 if code is None else code
    return None


def _watch(options: ServerOptions, process: subprocess.Popen[bytes], signals: _ForwardedSignals, restarts: int) -> _Exited:
    """Supervise a ready server's stubs until it exits (raises SupervisorStartError when the supervisor cannot start)."""
    ready_at, at_ready = time.monotonic(), find_stubs(process.pid)
    with supervising(options, process, server_restarts=restarts) as supervisor:
        signals.supervisor = supervisor
        code = process.wait()
        signals.supervisor = None
    return _Exited(code=code, uptime_s=time.monotonic() - ready_at, stubs=seen_stubs(at_ready, supervisor))


def _leave_no_server(process: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """Stop and clear a server still running when the command ends (a supervisor that could not start, any error)."""
    if process is not None and process.poll() is None:
        stop_and_clear(process, grace_s, known_stubs=find_stubs(process.pid))


def restart_pause(restarts: int, uptime_s: float, previous_s: float) -> float:
    """Seconds before `larr serve` starts a dead server again: SERVER_RESTART_BACKOFF_S, doubled (up to
    SERVER_RESTART_MAX_BACKOFF_S) each time a restarted server dies again within SERVER_STABLE_S of being ready.
    ``restarts``: restarts so far; ``uptime_s``: how long the dead server had been ready."""
    if restarts > 0 and uptime_s < SERVER_STABLE_S:
        return min(2 * previous_s, SERVER_RESTART_MAX_BACKOFF_S)
    return SERVER_RESTART_BACKOFF_S


def _describe_exit(code: int) -> str:
    """``-6`` -> "signal SIGABRT"; ``3`` -> "exit code 3"."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
