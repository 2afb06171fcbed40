"""Find, configure and run ``tritonserver`` and ``perf_analyzer`` outside the NGC container.

On a plain machine the ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel (Triton 2.51 with
the python backend) and ``perf_analyzer`` from the ``tritonclient[all]==2.51.0`` wheel; both need some
preparation that this module does once, so that every caller (``larr serve``, the tests, the benchmarks)
starts the server the same, safe way::

    larr serve --model-repository model_repository          # foreground, Ctrl-C stops it

    with run_triton_server("model_repository") as server:   # tests / benchmarks
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Safe defaults: every endpoint binds to loopback, and the admin protocols (model-repository,
shared-memory, logging, trace) need a key header. Supervised (the default), the server runs with
``--model-control-mode explicit`` so that :class:`larr.serving.supervisor.StubSupervisor` can reload a
model whose python-backend stub died (with the admin key; nothing else may load or unload), and serves
its own Prometheus metrics (``larr_degraded``, ``larr_stub_restarts_total``) on ``supervisor_port``.
Unsupervised, the repository is fixed at start-up (``--model-control-mode none``). Findings behind
these choices: ``docs/serving-toolchain.md``.
"""

from __future__ import annotations

import contextlib
import filecmp
import importlib.metadata
import importlib.util
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from larr.serving.supervisor import DEFAULT_POLL_S, STUB_EXECUTABLE, Stub, StubSupervisor, find_stubs, remove_regions

SERVE_HINT = (
    "install the serving extra (pip install 'larr[serve]': nvidia-pytriton==0.7.0 bundles tritonserver 2.51 "
    "with the python backend) or run inside the NGC image nvcr.io/nvidia/tritonserver:24.10-py3"
)
PERF_ANALYZER_HINT = "pip install 'tritonclient[all]==2.51.0' (newer wheels need glibc >= 2.38)"

# Protocols a client of the ensemble never needs; they can load/unload models, map shared memory or
# change logging, so they stay behind a key even on loopback.
ADMIN_PROTOCOLS: tuple[str, ...] = ("model-repository", "shared-memory", "logging", "trace")
ADMIN_KEY_HEADER = "admin-key"
# Triton's gRPC frontend only looks at headers with this prefix; the HTTP frontend uses the bare name.
GRPC_RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"
DEFAULT_SUPERVISOR_PORT = 8003  # the supervisor's /metrics, next to Triton's 8000/8001/8002
# How long Triton waits for in-flight requests at shutdown before it exits anyway. Its default, 30 s,
# is what a stop waited out whenever a request was stuck; our requests take milliseconds.
DEFAULT_EXIT_TIMEOUT_S = 5
# Characters that would break the '<protocols>:<header>=<key>' flag syntax.
_KEY_FORBIDDEN = frozenset(",:= \t\r\n")
# Where `larr serve` reads the admin key when --admin-key is not given: an environment variable (e.g. from a
# Kubernetes Secret) does not show in `ps` the way a command-line flag does.
ADMIN_KEY_ENV = "LARR_ADMIN_KEY"

# Triton's own default ports; clients, health probes and the deployment manifests (docker/) expect them.
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
# Triton's HTTP health endpoints (KServe v2): live = the process answers (restart it if not); ready = every
# model is loaded and healthy (route requests to it only then).
HEALTH_LIVE_PATH = "/v2/health/live"
HEALTH_READY_PATH = "/v2/health/ready"
# `larr serve` starts a server that died unasked again after this pause, doubled (up to the maximum) while it keeps
# dying within SERVER_STABLE_S of being ready.
SERVER_RESTART_BACKOFF_S = 1.0
SERVER_RESTART_MAX_BACKOFF_S = 60.0
SERVER_STABLE_S = 60.0


class TritonNotFoundError(RuntimeError):
    """tritonserver (or a piece it needs, such as the python-backend stub) is not installed."""


class PerfAnalyzerNotFoundError(RuntimeError):
    """perf_analyzer or one of its shared libraries is not installed."""


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with the tail of its log."""


class SupervisorStartError(ServerStartError):
    """The server became ready but its stub supervisor could not start (e.g. its metrics port is taken): the
    start failed as a whole, and the server is stopped; the message names the cause, not the server's log."""


@dataclass(frozen=True)
class TritonInstall:
    """A runnable tritonserver and what it needs beyond the binary."""

    executable: Path
    # None: the binary's compiled-in default (/opt/tritonserver/backends in the NGC image).
    backend_directory: Path | None = None
    cache_directory: Path | None = None
    # Environment variables to set for the server (and through it, the python-backend stubs).
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TlsOptions:
    """TLS of tritonserver's gRPC endpoint (Triton 2.51 has no TLS for HTTP or metrics: see README, "TLS").

    ``cert``/``key``: PEM server certificate (chain) and private key. ``ca``: PEM root certificate(s) that
    client certificates must chain to; given, the server requires one (mutual TLS).
    """

    cert: Path
    key: Path
    ca: Path | None = None

    def __post_init__(self) -> None:
        for name in ("cert", "key", "ca"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value).resolve()
            # tritonserver would only say "failed to start" for a missing file; say which one here.
            if not path.is_file():
                raise FileNotFoundError(f"TLS {name} file {value} does not exist")
            object.__setattr__(self, name, path)

    @classmethod
    def from_files(
        cls,
        cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None,
        ca: str | os.PathLike[str] | None = None,
    ) -> TlsOptions | None:
        """TLS options from the ``--tls-cert/--tls-key/--tls-ca`` flags; None when none is given."""
        if cert is None and key is None:
            if ca is None:
                return None
            raise ValueError("--tls-ca needs --tls-cert and --tls-key: mutual TLS is TLS plus client certificates")
        if key is None:
            raise ValueError("--tls-cert needs --tls-key, the certificate's private key")
        if cert is None:
            raise ValueError("--tls-key needs --tls-cert, the certificate the key belongs to")
        return cls(cert=Path(cert), key=Path(key), ca=None if ca is None else Path(ca))

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate issued by ``ca``."""
        return self.ca is not None

    def args(self) -> list[str]:
        """tritonserver's gRPC SSL flags (names checked against ``tritonserver --help`` of 2.51)."""
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.ca is not None:
            args += [f"--grpc-root-cert={self.ca}", "--grpc-use-ssl-mutual=true"]
        return args

    def probe_credentials(self) -> dict[str, object]:
        """``tritonclient.grpc.InferenceServerClient`` TLS arguments with which this host reaches its own server.

        It trusts exactly the server's certificate (gRPC accepts a leaf as trust anchor), so the readiness poll
        works whoever issued it. With mutual TLS it presents that same certificate as its client certificate,
        which the server accepts only if ``ca`` issued it and it allows client auth (no extended key usage, or
        serverAuth + clientAuth).
        """
        credentials: dict[str, object] = {"ssl": True, "root_certificates": str(self.cert)}
        if self.mutual:
            credentials.update(private_key=str(self.key), certificate_chain=str(self.cert))
        return credentials


@dataclass
class ServerOptions:
    """Command-line options of one tritonserver run, with safe defaults."""

    model_repository: Path
    host: str = "127.0.0.1"  # loopback only; expose deliberately (e.g. "0.0.0.0" behind a proxy)
    grpc_port: int = DEFAULT_GRPC_PORT
    http_port: int = DEFAULT_HTTP_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    supervisor_port: int = DEFAULT_SUPERVISOR_PORT
    admin_key: str | None = None  # None: a random key is generated, see ``admin_headers_*``
    log_verbose: int = 0
    supervise: bool = True  # reload a model whose stub died (see larr.serving.supervisor)
    exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S
    tls: TlsOptions | None = None  # None: plaintext gRPC
    extra_args: tuple[str, ...] = ()  # appended last, so they can override the defaults

    def __post_init__(self) -> None:
        self.model_repository = Path(self.model_repository)
        for name in ("grpc_port", "http_port", "metrics_port", "supervisor_port"):
            port = getattr(self, name)
            # Port 0 would let tritonserver pick one that we could not learn back.
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{name} must be an integer in 1..65535, got {port!r}")
        ports = (self.grpc_port, self.http_port, self.metrics_port, self.supervisor_port)
        if len(set(ports)) != len(ports):
            raise ValueError(f"grpc, http, metrics and supervisor ports must differ, got {ports}")
        if self.admin_key is None:
            self.admin_key = secrets.token_hex(16)
        if not self.admin_key or _KEY_FORBIDDEN.intersection(self.admin_key):
            raise ValueError("admin_key must be non-empty and contain none of ',', ':', '=' or whitespace")
        if self.log_verbose < 0:
            raise ValueError(f"log_verbose must be >= 0, got {self.log_verbose}")
        if self.exit_timeout_s < 1:
            raise ValueError(f"exit_timeout_s must be >= 1, got {self.exit_timeout_s}")
        self.extra_args = tuple(self.extra_args)

    @property
    def admin_headers_grpc(self) -> dict[str, str]:
        """Headers that unlock the admin protocols for ``tritonclient.grpc`` calls."""
        return {GRPC_RESTRICTED_HEADER_PREFIX + ADMIN_KEY_HEADER: str(self.admin_key)}

    @property
    def admin_headers_http(self) -> dict[str, str]:
        """Headers that unlock the admin APIs for ``tritonclient.http`` calls."""
        return {ADMIN_KEY_HEADER: str(self.admin_key)}


# --------------------------------------------------------------------------------------------------
# Locating the binaries


def _pytriton_bundle_dir() -> Path | None:
    """The ``tritonserver`` folder of an installed nvidia-pytriton wheel, found without importing it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    bundle = Path(spec.origin).parent / "tritonserver"
    return bundle if (bundle / "bin" / "tritonserver").is_file() else None


def python_stub_env() -> dict[str, str]:
    """Environment that makes the bundle's python-backend stub run *this* interpreter's environment.

    The stub embeds Python with an isolated config (PYTHONHOME/PYTHONPATH are ignored) and links
    ``libpython3.X.so.1.0`` by soname. Without help it picks the system libpython (e.g. Debian's) and
    its frozen ``site`` module, so numpy and larr are not importable. Putting this interpreter's
    LIBDIR first on LD_LIBRARY_PATH selects the matching libpython, and its directory first on PATH
    lets the embedded interpreter find its prefix (or venv) by looking up ``python3`` on PATH.
    """
    env: dict[str, str] = {}
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and ldlibrary and (Path(libdir) / ldlibrary).exists():
        env["LD_LIBRARY_PATH"] = _prepend_path(libdir, os.environ.get("LD_LIBRARY_PATH"))
    env["PATH"] = _prepend_path(str(Path(sys.executable).parent), os.environ.get("PATH"))
    return env


def prepare_pytriton_bundle(bundle_dir: Path, python_version: tuple[int, int] | None = None) -> TritonInstall:
    """Put the python-backend stub for ``python_version`` (default: the running one) into the bundle.

    The wheel ships one stub per Python version under ``python_backend_stubs/<X.Y>/`` and none in
    ``backends/python/``, where the python backend looks for it. The copy is skipped when an identical
    stub is already there and is done through a temporary file and ``os.replace``, so a concurrent
    launcher never sees a half-written executable.
    """
    bundle_dir = Path(bundle_dir)
    major, minor = python_version or sys.version_info[:2]
    executable = bundle_dir / "bin" / "tritonserver"
    if not executable.is_file():
        raise TritonNotFoundError(f"{executable} does not exist; {SERVE_HINT}")
    _require_numpy_1_for_the_bundled_stub(importlib.metadata.version("numpy"))
    stubs = bundle_dir / "python_backend_stubs"
    source = stubs / f"{major}.{minor}" / "triton_python_backend_stub"
    if not source.is_file():
        available = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
        raise TritonNotFoundError(
            f"the pytriton bundle at {bundle_dir} has no python-backend stub for Python {major}.{minor} "
            f"(available: {', '.join(available) or 'none'}); use one of those Python versions or {SERVE_HINT}"
        )
    backends = bundle_dir / "backends"
    if not (backends / "python").is_dir():
        raise TritonNotFoundError(f"the pytriton bundle at {bundle_dir} has no backends/python folder; {SERVE_HINT}")
    target = backends / "python" / "triton_python_backend_stub"
    if not (target.is_file() and filecmp.cmp(source, target, shallow=False)):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    caches = bundle_dir / "caches"
    return TritonInstall(
        executable=executable,
        backend_directory=backends,
        cache_directory=caches if caches.is_dir() else None,
        env=python_stub_env(),
    )


def _require_numpy_1_for_the_bundled_stub(numpy_version: str) -> None:
    """The bundle's python-backend stub (Triton 2.51) is built against NumPy 1.x. Under NumPy 2 it reads
    BYTES inputs with the wrong layout and aborts (``unpack_from requires a buffer of at least ...``), so
    every request dies with "Stub process ... is not healthy" (seen on a GPU host whose Python had NumPy 2)."""
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritonNotFoundError(
            f"this Python has numpy {numpy_version}, but the python-backend stub of the pytriton bundle "
            "(Triton 2.51) is built against NumPy 1.x and crashes on string inputs under NumPy 2: "
            "pip install 'numpy<2' (larr pins it) or serve from the NGC image"
        )


def locate_triton() -> TritonInstall:
    """``tritonserver`` on PATH (an NGC image or a source build), else the prepared pytriton bundle."""
    on_path = shutil.which("tritonserver")
    if on_path is not None:
        return TritonInstall(executable=Path(on_path))
    bundle = _pytriton_bundle_dir()
    if bundle is None:
        raise TritonNotFoundError(f"tritonserver is neither on PATH nor bundled by nvidia-pytriton; {SERVE_HINT}")
    return prepare_pytriton_bundle(bundle)


def find_tritonserver() -> Path:
    """Path of a runnable ``tritonserver`` (see :func:`locate_triton`)."""
    return locate_triton().executable


def find_perf_analyzer() -> Path:
    """``perf_analyzer`` next to this interpreter (where pip puts it), else on PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("perf_analyzer")
    if on_path is None:
        raise PerfAnalyzerNotFoundError(f"perf_analyzer is not installed; {PERF_ANALYZER_HINT}")
    return Path(on_path)


def _cuda_runtime_lib_dir() -> Path | None:
    """The folder holding ``libcudart.so.12`` from the ``nvidia-cuda-runtime-cu12`` wheel."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:  # no "nvidia" namespace at all
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None
    for location in spec.submodule_search_locations:
        lib = Path(location) / "lib"
        if (lib / "libcudart.so.12").exists():
            return lib
    return None


def _loadable(soname: str, env: Mapping[str, str]) -> bool:
    """Whether the dynamic loader finds ``soname`` with ``env``'s LD_LIBRARY_PATH (checked in a child,
    because LD_LIBRARY_PATH is read only at process start)."""
    probe = f"import ctypes; ctypes.CDLL({soname!r})"
    result = subprocess.run([sys.executable, "-c", probe], env=dict(env), capture_output=True, check=False)
    return result.returncode == 0


def perf_analyzer_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment in which the tritonclient wheel's ``perf_analyzer`` starts.

    The binary links ``libcudart.so.12`` even for CPU-only runs (taken from the
    ``nvidia-cuda-runtime-cu12`` wheel when the system has none) and ``libb64.so.0d`` (Debian: ``apt-get
    install libb64-0d``).
    """
    env = dict(os.environ if base is None else base)
    cudart = _cuda_runtime_lib_dir()
    if cudart is not None:
        env["LD_LIBRARY_PATH"] = _prepend_path(str(cudart), env.get("LD_LIBRARY_PATH"))
    elif not _loadable("libcudart.so.12", env):
        raise PerfAnalyzerNotFoundError(
            "perf_analyzer needs libcudart.so.12: pip install nvidia-cuda-runtime-cu12 (or install the CUDA 12 runtime)"
        )
    if not _loadable("libb64.so.0d", env):
        raise PerfAnalyzerNotFoundError("perf_analyzer needs libb64.so.0d: apt-get install libb64-0d (Debian/Ubuntu)")
    return env


def _prepend_path(entry: str, current: str | None) -> str:
    return entry if not current else f"{entry}{os.pathsep}{current}"


# --------------------------------------------------------------------------------------------------
# Command line


def build_command(options: ServerOptions, install: TritonInstall | None = None) -> list[str]:
    """The ``tritonserver`` argv for ``options`` (``install`` defaults to :func:`locate_triton`)."""
    install = install or locate_triton()
    restricted = f"{','.join(ADMIN_PROTOCOLS)}:{ADMIN_KEY_HEADER}={options.admin_key}"
    command = [
        str(install.executable),
        f"--model-repository={options.model_repository.resolve()}",
        # Load everything at start-up. Unsupervised, nothing can change it later; supervised, only a
        # caller with the admin key can (the supervisor, to reload a model whose stub died).
        *(("--model-control-mode=explicit", "--load-model=*") if options.supervise else ("--model-control-mode=none",)),
        f"--grpc-address={options.host}",
        f"--grpc-port={options.grpc_port}",
        f"--http-address={options.host}",
        f"--http-port={options.http_port}",
        f"--metrics-address={options.host}",
        f"--metrics-port={options.metrics_port}",
        # The help text says '<apis>,<key>=<value>'; 2.51 only accepts '<apis>:<key>=<value>'.
        f"--grpc-restricted-protocol={restricted}",
        f"--http-restricted-api={restricted}",
        f"--log-verbose={options.log_verbose}",
        f"--exit-timeout-secs={options.exit_timeout_s}",
    ]
    if options.tls is not None:
        command.extend(options.tls.args())
    if install.backend_directory is not None:
        command.append(f"--backend-directory={install.backend_directory}")
    if install.cache_directory is not None:
        command.append(f"--cache-directory={install.cache_directory}")
    command.extend(options.extra_args)
    return command


def server_env(install: TritonInstall, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start ``install``'s tritonserver in."""
    env = dict(os.environ if base is None else base)
    env.update(install.env)
    return env


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ports picked below the kernel's ephemeral range start here (above the well-known and most registered services).
LOWEST_PICKED_PORT = 10_000


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` right now (another process may still take it before we do).

    Picked below the kernel's ephemeral range when there is room: a port from ``bind(0)`` lies inside that range,
    where every outgoing connection on the machine (a client, a pip download) may take it as its source port in
    the seconds before our server binds it. Below the range only a process binding that very port can.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ephemeral_low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(64 if ephemeral_low > LOWEST_PICKED_PORT else 0):
        port = rng.randrange(LOWEST_PICKED_PORT, ephemeral_low)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:  # taken: try another
                continue
            return port
    with socket.socket(family, socket.SOCK_STREAM) as sock:  # no room below the range: let the kernel pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct :func:`free_port` ports (a server needs each of its ports to differ)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux's default, 32768, when it cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# --------------------------------------------------------------------------------------------------
# Running


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
        return _host_port(self.options.host, self.options.grpc_port)

    @property
    def http_url(self) -> str:
        """``host:port`` as ``tritonclient.http`` takes it."""
        return _host_port(self.options.host, self.options.http_port)

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{_host_port(self.options.host, self.options.metrics_port)}/metrics"

    @property
    def supervisor_metrics_url(self) -> str:
        """Full URL of the supervisor's Prometheus page (``larr_degraded``, ``larr_stub_restarts_total``)."""
        return f"http://{_host_port(self.options.host, self.options.supervisor_port)}/metrics"

    @property
    def admin_key(self) -> str:
        return str(self.options.admin_key)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        return _tail(self.log_path, lines)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _check_repository(model_repository: Path) -> None:
    if not Path(model_repository).is_dir():
        raise FileNotFoundError(f"model repository {model_repository} is not a directory")


def _local_grpc_client(options: ServerOptions):
    """A ``tritonclient.grpc`` client of the server ``options`` describe, from this host (TLS when it has TLS)."""
    import tritonclient.grpc as grpcclient  # deferred: the CLI imports this module just to print --help

    tls = options.tls
    return grpcclient.InferenceServerClient(_host_port(options.host, options.grpc_port), **(tls.probe_credentials() if tls else {}))


def _wait_ready(
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
            f"cannot serve the stub supervisor's metrics on {_host_port(options.host, options.supervisor_port)}: {error}"
        ) from error
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
        metrics_http.shutdown()
        metrics_http.server_close()
        control.close()


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
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


def _stop_and_clear(process: subprocess.Popen[bytes], grace_s: float, known_stubs: Sequence[Stub]) -> None:
    """:func:`_stop`, then clear what a server that died unasked (Triton 2.51 can abort when a stub is killed)
    leaves behind: stubs still running in its process group (re-parented, so only the group finds them; only those
    are killed, since a pid seen earlier may belong to another server's stub by now), and the shared memory of
    ``known_stubs`` (:func:`_seen_stubs`: a stub that noticed its server's death exits by itself, but leaves its
    region). A server that exited cleanly has removed both itself."""
    _stop(process, grace_s)
    _reap(find_stubs(process.pid, by_group=True))
    remove_regions(stub.shm_region for stub in known_stubs)  # the server is gone: nothing maps them any more


def _seen_stubs(at_ready: Sequence[Stub], supervisor: StubSupervisor | None) -> list[Stub]:
    """The stubs a server had when it became ready and, when supervised, every one the supervisor saw since
    (a healed model's stubs are new processes with new shared memory)."""
    return [*at_ready, *(supervisor.known_stubs if supervisor else ())]


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
    _check_repository(Path(model_repository))
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
    own_log = log_path is None
    if own_log:
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        log_file = Path(name)
    else:
        log_file = Path(log_path)  # type: ignore[arg-type]
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            build_command(options, install),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(install),
            # Own session: a Ctrl-C in the terminal reaches us, not the server, and we stop it in order.
            start_new_session=True,
        )
    try:
        _wait_ready(options, process, startup_timeout_s, lambda: f"log {log_file}:\n{_tail(log_file, 40)}")
    except BaseException:
        _stop(process, shutdown_grace_s)  # the log stays, since the error message points at it
        raise
    at_ready, supervisor = find_stubs(process.pid), None
    try:
        with supervising(options, process, supervisor_poll_s) as supervisor:
            yield RunningServer(options=options, process=process, log_path=log_file, supervisor=supervisor)
    finally:
        _stop_and_clear(process, shutdown_grace_s, _seen_stubs(at_ready, supervisor))
        if own_log:
            log_file.unlink(missing_ok=True)


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
    stubs (see :mod:`larr.serving.supervisor`). SIGINT/SIGTERM sent to this process stop the supervisor
    and are forwarded to the server, which then drains in-flight requests (at most ``exit_timeout_s``) and
    exits. The server runs in a session of its own, as under :func:`run_triton_server`: a terminal Ctrl-C
    reaches it only through this process, and a server that dies unasked is cleared the same way (its
    process group holds the stubs it leaves behind).
    """
    environ = os.environ if environ is None else environ
    key_source = "--admin-key"
    if admin_key is None and ADMIN_KEY_ENV in environ:
        admin_key, key_source = environ[ADMIN_KEY_ENV], f"${ADMIN_KEY_ENV}"
    try:
        if admin_key is not None and not admin_key:
            raise ValueError(f"the admin key from {key_source} is empty")
        _check_repository(Path(model_repository))
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
    supervised = f"http://{_host_port(host, supervisor_port)}/metrics" if supervise else "off (--no-supervise)"
    tls = options.tls
    grpc_security = "plaintext" if tls is None else ("mutual TLS" if tls.mutual else "TLS")
    shown_key = options.admin_key if admin_key is None else f"(from {key_source})"
    print(
        f"tritonserver {install.executable}\n"
        f"  model repository  {options.model_repository.resolve()}\n"
        f"  gRPC              {_host_port(host, grpc_port)}  ({grpc_security})\n"
        f"  HTTP              http://{_host_port(host, http_port)}\n"
        f"  metrics           http://{_host_port(host, metrics_port)}/metrics\n"
        f"  stub supervisor   {supervised}\n"
        f"  admin key         {shown_key}  (restricted: {', '.join(ADMIN_PROTOCOLS)}; header "
        f"'{GRPC_RESTRICTED_HEADER_PREFIX}{ADMIN_KEY_HEADER}' over gRPC, '{ADMIN_KEY_HEADER}' over HTTP)",
        flush=True,
    )
    stopping = threading.Event()
    current: list[subprocess.Popen[bytes]] = []  # the tritonserver process of this round
    running: list[StubSupervisor] = []  # its supervisor, once it is ready

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()  # first, so that neither the stubs' planned exit nor the server's is "healed"
        for supervisor in running:
            supervisor.request_stop()
        for process in current:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        restarts, backoff_s = 0, SERVER_RESTART_BACKOFF_S
        while True:
            current[:] = [subprocess.Popen(build_command(options, install), env=server_env(install),
                                           start_new_session=True)]
            process = current[0]
            if stopping.is_set():  # the signal came before forward() could see this server
                process.send_signal(signal.SIGINT)
            try:
                _wait_ready(options, process, startup_timeout_s, lambda: "its log is above")
            except ServerStartError as error:
                code = process.poll()
                # stops a server not ready in time; clears what one that died while starting left behind
                _stop_and_clear(process, options.exit_timeout_s + 5, known_stubs=())
                if code == 0 or stopping.is_set():  # it was asked to stop (a forwarded signal) before it was ready
                    return 0
                print(f"larr serve: {error}", file=sys.stderr)
                # a server that cannot start is not restarted: the same start would fail again
                return 1 if code is None else code
            ready_at, at_ready = time.monotonic(), find_stubs(process.pid)
            try:
                with supervising(options, process, server_restarts=restarts) as supervisor:
                    running[:] = [supervisor] if supervisor is not None else []
                    code = process.wait()
                    running.clear()
            except SupervisorStartError as error:  # the supervisor could not start: no unsupervised server is left
                print(f"larr serve: {error}", file=sys.stderr)
                return 1
            if stopping.is_set() or code == 0 or not options.supervise:
                return code
            # The server died unasked (Triton 2.51's python backend can abort the whole process when a stub
            # dies): start it again, as a container restart policy would, without dropping the endpoints for
            # longer than a start. Crashing again soon after a start backs off, up to SERVER_RESTART_MAX_BACKOFF_S.
            _stop_and_clear(process, options.exit_timeout_s + 5, _seen_stubs(at_ready, supervisor))
            backoff_s = restart_pause(restarts, time.monotonic() - ready_at, backoff_s)
            restarts += 1
            print(f"larr serve: tritonserver exited unasked ({_describe_exit(code)}); starting it again in "
                  f"{backoff_s:.0f} s (server restart {restarts})", file=sys.stderr, flush=True)
            if stopping.wait(backoff_s):
                return 0  # asked to stop while nothing ran: a clean stop
    finally:
        # Whatever ended this command (a supervisor that could not start, any error), it leaves no server behind:
        # the server runs in a session of its own, so nothing else would stop it.
        for process in current:
            if process.poll() is None:
                _stop_and_clear(process, options.exit_timeout_s + 5, known_stubs=find_stubs(process.pid))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
