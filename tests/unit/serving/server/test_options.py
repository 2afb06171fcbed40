"""Unit tests of larr.serving.server.options: ServerOptions, TLS and the tritonserver command line they make."""

from __future__ import annotations

from pathlib import Path

import pytest

from larr.serving.server.install import TritonInstall
from larr.serving.server.options import (
    ADMIN_PROTOCOLS,
    DEFAULT_EXIT_TIMEOUT_S,
    ServerOptions,
    TlsOptions,
    build_command,
)


def command_flag(command: list[str], name: str) -> str:
    """The value of the one ``--name=value`` argument in ``command``."""
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]
    if len(values) != 1:
        raise LookupError(f"--{name} appears {len(values)} times in {command}")
    return values[0]


def pem_files(root: Path, *names: str) -> list[Path]:
    """Stand-in PEM files: the options check that they exist; tritonserver reads them."""
    paths = [root / name for name in names]
    for path in paths:
        path.write_text("-----BEGIN PLACEHOLDER-----\n", encoding="utf-8")
    return paths


def test_build_command_has_safe_defaults(tmp_path: Path) -> None:
    install = TritonInstall(
        executable=Path("/opt/x/tritonserver"), backend_directory=Path("/b"), cache_directory=Path("/c")
    )
    options = ServerOptions(
        model_repository=tmp_path / "repo", grpc_port=9001, http_port=9000, metrics_port=9002, admin_key="k3y"
    )
    command = build_command(options, install)

    assert command[0] == "/opt/x/tritonserver"
    assert command_flag(command, "model-repository") == str((tmp_path / "repo").resolve())
    # Supervised (the default): explicit mode, so the supervisor can reload a model whose stub died;
    # loading and unloading stay behind the admin key like the rest of the model-repository protocol.
    assert command_flag(command, "model-control-mode") == "explicit"
    assert command_flag(command, "load-model") == "*"
    assert command_flag(command, "exit-timeout-secs") == str(DEFAULT_EXIT_TIMEOUT_S)
    for name in ("grpc-address", "http-address", "metrics-address"):
        assert command_flag(command, name) == "127.0.0.1"
    assert (command_flag(command, "grpc-port"), command_flag(command, "http-port"), command_flag(command, "metrics-port")) == (
        "9001", "9000", "9002"
    )
    # The syntax 2.51 accepts: '<protocols>:<header>=<key>' (not the comma form its --help shows).
    expected = "model-repository,shared-memory,logging,trace:admin-key=k3y"
    assert command_flag(command, "grpc-restricted-protocol") == expected
    assert command_flag(command, "http-restricted-api") == expected
    assert command_flag(command, "backend-directory") == "/b"
    assert command_flag(command, "cache-directory") == "/c"


def test_unsupervised_servers_keep_the_repository_fixed(tmp_path: Path) -> None:
    install = TritonInstall(executable=Path("/usr/bin/tritonserver"))
    command = build_command(ServerOptions(model_repository=tmp_path, admin_key="k", supervise=False), install)
    assert command_flag(command, "model-control-mode") == "none"
    assert not any(arg.startswith("--load-model") for arg in command)


def test_build_command_without_bundle_dirs_and_with_extra_args_last(tmp_path: Path) -> None:
    install = TritonInstall(executable=Path("/usr/bin/tritonserver"))
    options = ServerOptions(model_repository=tmp_path, host="::1", admin_key="k", extra_args=("--log-info=false",))
    command = build_command(options, install)
    assert not any(a.startswith(("--backend-directory", "--cache-directory")) for a in command)
    assert command_flag(command, "grpc-address") == "::1"
    assert command[-1] == "--log-info=false"


def test_admin_key_is_random_when_not_given(tmp_path: Path) -> None:
    first, second = ServerOptions(model_repository=tmp_path), ServerOptions(model_repository=tmp_path)
    assert first.admin_key and second.admin_key and first.admin_key != second.admin_key
    assert len(first.admin_key) >= 32
    assert first.admin_headers_grpc == {"triton-grpc-protocol-admin-key": first.admin_key}
    assert first.admin_headers_http == {"admin-key": first.admin_key}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grpc_port": 0}, "grpc_port"),
        ({"http_port": 70000}, "http_port"),
        ({"metrics_port": True}, "metrics_port"),
        ({"grpc_port": 8000, "http_port": 8000}, "must differ"),
        ({"supervisor_port": 8002}, "must differ"),
        ({"supervisor_port": 0}, "supervisor_port"),
        ({"exit_timeout_s": 0}, "exit_timeout_s"),
        ({"admin_key": "a:b"}, "admin_key"),
        ({"admin_key": "a b"}, "admin_key"),
        ({"admin_key": ""}, "admin_key"),
        ({"log_verbose": -1}, "log_verbose"),
    ],
)
def test_server_options_reject_bad_values(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerOptions(model_repository=tmp_path, **kwargs)


def test_admin_protocols_leave_inference_and_model_config_open() -> None:
    # The client needs model-config, perf_analyzer needs statistics; neither may be restricted.
    assert set(ADMIN_PROTOCOLS) == {"model-repository", "shared-memory", "logging", "trace"}


# ------------------------------------------------------------------------------------------------
# TLS


def test_build_command_with_tls_passes_tritons_grpc_ssl_flags(tmp_path: Path) -> None:
    cert, key = pem_files(tmp_path, "server.pem", "server.key")
    options = ServerOptions(model_repository=tmp_path, admin_key="k", tls=TlsOptions(cert=cert, key=key))
    command = build_command(options, TritonInstall(executable=Path("/usr/bin/tritonserver")))
    assert command_flag(command, "grpc-use-ssl") == "true"
    assert command_flag(command, "grpc-server-cert") == str(cert.resolve())
    assert command_flag(command, "grpc-server-key") == str(key.resolve())
    # Server-side TLS only: no client certificates asked for.
    assert not any(a.startswith(("--grpc-root-cert", "--grpc-use-ssl-mutual")) for a in command)


def test_build_command_with_a_ca_asks_for_client_certificates(tmp_path: Path) -> None:
    cert, key, ca = pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    options = ServerOptions(model_repository=tmp_path, admin_key="k", tls=TlsOptions(cert=cert, key=key, ca=ca))
    command = build_command(options, TritonInstall(executable=Path("/usr/bin/tritonserver")))
    assert command_flag(command, "grpc-use-ssl") == "true"
    assert command_flag(command, "grpc-root-cert") == str(ca.resolve())
    assert command_flag(command, "grpc-use-ssl-mutual") == "true"


def test_build_command_without_tls_has_no_ssl_flags(tmp_path: Path) -> None:
    command = build_command(ServerOptions(model_repository=tmp_path), TritonInstall(executable=Path("t")))
    assert not any(a.startswith("--grpc-use-ssl") or "cert" in a for a in command)


def test_tls_options_name_a_missing_file(tmp_path: Path) -> None:
    (cert,) = pem_files(tmp_path, "server.pem")
    with pytest.raises(FileNotFoundError, match=r"TLS key file .*missing\.key does not exist"):
        TlsOptions(cert=cert, key=tmp_path / "missing.key")
    with pytest.raises(FileNotFoundError, match="TLS ca file"):
        TlsOptions(cert=cert, key=cert, ca=tmp_path / "missing-ca.pem")


@pytest.mark.parametrize(
    "given, message",
    [
        ({"key": "server.key"}, "--tls-key needs --tls-cert"),
        ({"cert": "server.pem"}, "--tls-cert needs --tls-key"),
        ({"ca": "ca.pem"}, "--tls-ca needs --tls-cert and --tls-key"),
        ({"key": "server.key", "ca": "ca.pem"}, "--tls-key needs --tls-cert"),
    ],
)
def test_tls_flags_must_come_with_a_certificate_and_its_key(tmp_path: Path, given: dict, message: str) -> None:
    pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    with pytest.raises(ValueError, match=message):
        TlsOptions.from_files(**{"cert": None, "key": None} | {k: tmp_path / v for k, v in given.items()})


def test_no_tls_flags_mean_plaintext() -> None:
    assert TlsOptions.from_files(None, None, None) is None


def test_probe_credentials_trust_the_servers_own_certificate(tmp_path: Path) -> None:
    cert, key, ca = pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    assert TlsOptions(cert, key).probe_credentials() == {"ssl": True, "root_certificates": str(cert.resolve())}
    # Mutual TLS: the poll presents the server's certificate as its own client certificate.
    assert TlsOptions(cert, key, ca).probe_credentials() == {
        "ssl": True,
        "root_certificates": str(cert.resolve()),
        "private_key": str(key.resolve()),
        "certificate_chain": str(cert.resolve()),
    }
