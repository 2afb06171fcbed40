"""What one tritonserver run is started with: ports, the admin key, TLS, and the command line they make.

Safe defaults: every endpoint binds to loopback, and the admin protocols (model-repository, shared-memory,
logging, trace) need a key header. Supervised (the default), the server runs with ``--model-control-mode
explicit`` so that :class:`larr.serving.server.supervisor.StubSupervisor` can reload a model whose
python-backend stub died (with the admin key; nothing else may load or unload); unsupervised, the repository is
fixed at start-up (``--model-control-mode none``). Findings behind these choices: ``docs/serving-toolchain.md``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from larr.serving.server.install import TritonInstall, locate_triton

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
    supervise: bool = True  # reload a model whose stub died (see larr.serving.server.supervisor)
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


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:8001``), as clients and URLs take it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
