"""Unit tests of larr.serving.launcher: command building, stub placement, errors (no tritonserver run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from larr.serving import launcher
from larr.serving.launcher import (
    ADMIN_KEY_ENV,
    ADMIN_PROTOCOLS,
    PerfAnalyzerNotFoundError,
    ServerOptions,
    ServerStartError,
    SupervisorStartError,
    TlsOptions,
    TritonInstall,
    TritonNotFoundError,
    build_command,
    find_perf_analyzer,
    find_tritonserver,
    locate_triton,
    perf_analyzer_env,
    prepare_pytriton_bundle,
    python_stub_env,
    run_triton_server,
    serve_main,
    server_env,
)

PY = sys.version_info[:2]


def _flag(command: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]
    if len(values) != 1:
        raise LookupError(f"--{name} appears {len(values)} times in {command}")
    return values[0]


def _fake_bundle(root: Path, versions: tuple[tuple[int, int], ...] = (PY,)) -> Path:
    """A folder shaped like pytriton's ``tritonserver`` bundle, with fake binaries."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_bytes(b"#!fake tritonserver\n")
    (root / "backends" / "python").mkdir(parents=True)
    (root / "caches" / "local").mkdir(parents=True)
    for major, minor in versions:
        stub_dir = root / "python_backend_stubs" / f"{major}.{minor}"
        stub_dir.mkdir(parents=True)
        (stub_dir / "triton_python_backend_stub").write_bytes(f"stub for {major}.{minor}".encode())
    return root


# ------------------------------------------------------------------------------------------------
# ServerOptions and build_command


def test_build_command_has_safe_defaults(tmp_path: Path) -> None:
    install = TritonInstall(
        executable=Path("/opt/x/tritonserver"), backend_directory=Path("/b"), cache_directory=Path("/c")
    )
    options = ServerOptions(
        model_repository=tmp_path / "repo", grpc_port=9001, http_port=9000, metrics_port=9002, admin_key="k3y"
    )
    command = build_command(options, install)

    assert command[0] == "/opt/x/tritonserver"
    assert _flag(command, "model-repository") == str((tmp_path / "repo").resolve())
    # Supervised (the default): explicit mode, so the supervisor can reload a model whose stub died;
    # loading and unloading stay behind the admin key like the rest of the model-repository protocol.
    assert _flag(command, "model-control-mode") == "explicit"
    assert _flag(command, "load-model") == "*"
    assert _flag(command, "exit-timeout-secs") == str(launcher.DEFAULT_EXIT_TIMEOUT_S)
    for name in ("grpc-address", "http-address", "metrics-address"):
        assert _flag(command, name) == "127.0.0.1"
    assert (_flag(command, "grpc-port"), _flag(command, "http-port"), _flag(command, "metrics-port")) == (
        "9001", "9000", "9002"
    )
    # The syntax 2.51 accepts: '<protocols>:<header>=<key>' (not the comma form its --help shows).
    expected = "model-repository,shared-memory,logging,trace:admin-key=k3y"
    assert _flag(command, "grpc-restricted-protocol") == expected
    assert _flag(command, "http-restricted-api") == expected
    assert _flag(command, "backend-directory") == "/b"
    assert _flag(command, "cache-directory") == "/c"


def test_unsupervised_servers_keep_the_repository_fixed(tmp_path: Path) -> None:
    install = TritonInstall(executable=Path("/usr/bin/tritonserver"))
    command = build_command(ServerOptions(model_repository=tmp_path, admin_key="k", supervise=False), install)
    assert _flag(command, "model-control-mode") == "none"
    assert not any(arg.startswith("--load-model") for arg in command)


def test_build_command_without_bundle_dirs_and_with_extra_args_last(tmp_path: Path) -> None:
    install = TritonInstall(executable=Path("/usr/bin/tritonserver"))
    options = ServerOptions(model_repository=tmp_path, host="::1", admin_key="k", extra_args=("--log-info=false",))
    command = build_command(options, install)
    assert not any(a.startswith(("--backend-directory", "--cache-directory")) for a in command)
    assert _flag(command, "grpc-address") == "::1"
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


def _pem_files(root: Path, *names: str) -> list[Path]:
    """Stand-in PEM files: the launcher checks that they exist; tritonserver reads them."""
    paths = [root / name for name in names]
    for path in paths:
        path.write_text("-----BEGIN PLACEHOLDER-----\n", encoding="utf-8")
    return paths


def test_build_command_with_tls_passes_tritons_grpc_ssl_flags(tmp_path: Path) -> None:
    cert, key = _pem_files(tmp_path, "server.pem", "server.key")
    options = ServerOptions(model_repository=tmp_path, admin_key="k", tls=TlsOptions(cert=cert, key=key))
    command = build_command(options, TritonInstall(executable=Path("/usr/bin/tritonserver")))
    assert _flag(command, "grpc-use-ssl") == "true"
    assert _flag(command, "grpc-server-cert") == str(cert.resolve())
    assert _flag(command, "grpc-server-key") == str(key.resolve())
    # Server-side TLS only: no client certificates asked for.
    assert not any(a.startswith(("--grpc-root-cert", "--grpc-use-ssl-mutual")) for a in command)


def test_build_command_with_a_ca_asks_for_client_certificates(tmp_path: Path) -> None:
    cert, key, ca = _pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    options = ServerOptions(model_repository=tmp_path, admin_key="k", tls=TlsOptions(cert=cert, key=key, ca=ca))
    command = build_command(options, TritonInstall(executable=Path("/usr/bin/tritonserver")))
    assert _flag(command, "grpc-use-ssl") == "true"
    assert _flag(command, "grpc-root-cert") == str(ca.resolve())
    assert _flag(command, "grpc-use-ssl-mutual") == "true"


def test_build_command_without_tls_has_no_ssl_flags(tmp_path: Path) -> None:
    command = build_command(ServerOptions(model_repository=tmp_path), TritonInstall(executable=Path("t")))
    assert not any(a.startswith("--grpc-use-ssl") or "cert" in a for a in command)


def test_tls_options_name_a_missing_file(tmp_path: Path) -> None:
    (cert,) = _pem_files(tmp_path, "server.pem")
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
    _pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    with pytest.raises(ValueError, match=message):
        TlsOptions.from_files(**{"cert": None, "key": None} | {k: tmp_path / v for k, v in given.items()})


def test_no_tls_flags_mean_plaintext() -> None:
    assert TlsOptions.from_files(None, None, None) is None


def test_probe_credentials_trust_the_servers_own_certificate(tmp_path: Path) -> None:
    cert, key, ca = _pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    assert TlsOptions(cert, key).probe_credentials() == {"ssl": True, "root_certificates": str(cert.resolve())}
    # Mutual TLS: the poll presents the server's certificate as its own client certificate.
    assert TlsOptions(cert, key, ca).probe_credentials() == {
        "ssl": True,
        "root_certificates": str(cert.resolve()),
        "private_key": str(key.resolve()),
        "certificate_chain": str(cert.resolve()),
    }


# ------------------------------------------------------------------------------------------------
# Locating tritonserver and placing the stub


def test_prepare_bundle_copies_the_stub_of_the_running_python(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "bundle", versions=((3, 10), PY))
    install = prepare_pytriton_bundle(bundle)
    stub = bundle / "backends" / "python" / "triton_python_backend_stub"
    assert stub.read_bytes() == f"stub for {PY[0]}.{PY[1]}".encode()
    assert os.access(stub, os.X_OK) == os.access(
        bundle / "python_backend_stubs" / f"{PY[0]}.{PY[1]}" / "triton_python_backend_stub", os.X_OK
    )
    assert install.executable == bundle / "bin" / "tritonserver"
    assert install.backend_directory == bundle / "backends"
    assert install.cache_directory == bundle / "caches"
    assert install.env == python_stub_env()
    assert not list((bundle / "backends" / "python").glob(".*.tmp"))


def test_prepare_bundle_keeps_an_identical_stub_and_replaces_a_different_one(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "bundle")
    stub = bundle / "backends" / "python" / "triton_python_backend_stub"
    prepare_pytriton_bundle(bundle)
    inode = stub.stat().st_ino
    prepare_pytriton_bundle(bundle)
    assert stub.stat().st_ino == inode  # identical: not rewritten

    stub.write_bytes(b"stub of another python")
    prepare_pytriton_bundle(bundle)
    assert stub.read_bytes() == f"stub for {PY[0]}.{PY[1]}".encode()


def test_prepare_bundle_without_a_stub_for_this_python_names_the_available_ones(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "bundle", versions=((3, 8), (3, 9)))
    with pytest.raises(TritonNotFoundError, match=r"no python-backend stub for Python 3\.42.*3\.8, 3\.9"):
        prepare_pytriton_bundle(bundle, python_version=(3, 42))


def test_prepare_bundle_refuses_numpy_2_which_crashes_the_bundled_stub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = _fake_bundle(tmp_path / "bundle")
    monkeypatch.setattr(launcher.importlib.metadata, "version", lambda name: {"numpy": "2.5.2"}[name])
    with pytest.raises(TritonNotFoundError, match=r"numpy 2\.5\.2.*NumPy 1\.x.*pip install 'numpy<2'"):
        prepare_pytriton_bundle(bundle)
    assert not (bundle / "backends" / "python" / "triton_python_backend_stub").exists()


def test_prepare_bundle_without_binary_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(TritonNotFoundError, match="nvidia-pytriton"):
        prepare_pytriton_bundle(tmp_path / "empty")


def test_locate_prefers_tritonserver_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(launcher.shutil, "which", lambda name: "/opt/tritonserver/bin/tritonserver")
    monkeypatch.setattr(launcher, "_pytriton_bundle_dir", lambda: _fake_bundle(tmp_path / "bundle"))
    install = locate_triton()
    assert install == TritonInstall(executable=Path("/opt/tritonserver/bin/tritonserver"))
    assert find_tritonserver() == Path("/opt/tritonserver/bin/tritonserver")


def test_locate_falls_back_to_the_pytriton_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "bundle")
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    monkeypatch.setattr(launcher, "_pytriton_bundle_dir", lambda: bundle)
    assert find_tritonserver() == bundle / "bin" / "tritonserver"
    assert (bundle / "backends" / "python" / "triton_python_backend_stub").is_file()


def test_locate_without_any_tritonserver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    monkeypatch.setattr(launcher, "_pytriton_bundle_dir", lambda: None)
    with pytest.raises(TritonNotFoundError, match=r"larr\[serve\].*nvidia-pytriton"):
        find_tritonserver()


def test_python_stub_env_points_at_this_interpreter() -> None:
    env = python_stub_env()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")


def test_server_env_adds_the_install_env_to_the_base() -> None:
    install = TritonInstall(executable=Path("t"), env={"LD_LIBRARY_PATH": "/x"})
    env = server_env(install, base={"HOME": "/h", "LD_LIBRARY_PATH": "/old"})
    assert env == {"HOME": "/h", "LD_LIBRARY_PATH": "/x"}


# ------------------------------------------------------------------------------------------------
# perf_analyzer


def test_perf_analyzer_env_prepends_the_cuda_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(launcher, "_cuda_runtime_lib_dir", lambda: tmp_path)
    monkeypatch.setattr(launcher, "_loadable", lambda soname, env: True)
    env = perf_analyzer_env({"LD_LIBRARY_PATH": "/already"})
    assert env["LD_LIBRARY_PATH"] == f"{tmp_path}{os.pathsep}/already"


def test_perf_analyzer_env_without_cudart_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "_cuda_runtime_lib_dir", lambda: None)
    monkeypatch.setattr(launcher, "_loadable", lambda soname, env: False)
    with pytest.raises(PerfAnalyzerNotFoundError, match="nvidia-cuda-runtime-cu12"):
        perf_analyzer_env({})


def test_perf_analyzer_env_without_libb64_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(launcher, "_cuda_runtime_lib_dir", lambda: tmp_path)
    monkeypatch.setattr(launcher, "_loadable", lambda soname, env: soname != "libb64.so.0d")
    with pytest.raises(PerfAnalyzerNotFoundError, match="libb64-0d"):
        perf_analyzer_env({})


def test_loadable_checks_with_the_given_environment() -> None:
    assert launcher._loadable("libc.so.6", dict(os.environ))
    assert not launcher._loadable("libdefinitely-not-there.so.1", dict(os.environ))


def test_find_perf_analyzer_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(launcher.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    with pytest.raises(PerfAnalyzerNotFoundError, match=r"tritonclient\[all\]==2\.51\.0"):
        find_perf_analyzer()


def test_find_perf_analyzer_prefers_the_one_beside_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "perf_analyzer"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(launcher.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(launcher.shutil, "which", lambda name: "/elsewhere/perf_analyzer")
    assert find_perf_analyzer() == binary


# ------------------------------------------------------------------------------------------------
# Running: errors and teardown, with stand-in processes


def test_run_triton_server_rejects_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        with run_triton_server(tmp_path / "missing", install=TritonInstall(executable=Path("/nonexistent"))):
            pass


def test_serve_main_reports_a_missing_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(tmp_path / "missing") == 2
    assert "not a directory" in capsys.readouterr().err


def test_serve_main_reports_a_key_without_a_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = _pem_files(tmp_path, "server.key")
    assert serve_main(tmp_path, tls_key=key) == 2
    assert "larr serve: --tls-key needs --tls-cert" in capsys.readouterr().err


def test_serve_main_reports_a_missing_certificate_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = _pem_files(tmp_path, "server.key")
    assert serve_main(tmp_path, tls_cert=tmp_path / "nope.pem", tls_key=key) == 2
    assert "TLS cert file" in capsys.readouterr().err


class _FinishedServer:
    """Stands in for the tritonserver Popen of serve_main: records the argv, exits at once."""

    argv: list[str] = []
    kwargs: dict[str, object] = {}
    pid = 2**22 + 1  # above Linux's pid_max: no process, so no process group holds stubs of it

    def __init__(self, argv: list[str], **kwargs: object) -> None:
        _FinishedServer.argv, _FinishedServer.kwargs = argv, kwargs

    def wait(self) -> int:
        return 0

    def poll(self) -> int:
        return 0


@pytest.fixture()
def fake_triton(monkeypatch: pytest.MonkeyPatch) -> type[_FinishedServer]:
    monkeypatch.setattr(launcher, "locate_triton", lambda: TritonInstall(executable=Path("/usr/bin/tritonserver")))
    monkeypatch.setattr(launcher.subprocess, "Popen", _FinishedServer)
    return _FinishedServer


def test_serve_main_takes_the_admin_key_from_the_environment_and_does_not_print_it(
    tmp_path: Path, fake_triton: type[_FinishedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(tmp_path, environ={ADMIN_KEY_ENV: "from-secret"}) == 0
    assert _flag(fake_triton.argv, "grpc-restricted-protocol").endswith(":admin-key=from-secret")
    out = capsys.readouterr().out
    assert "from-secret" not in out and f"(from ${ADMIN_KEY_ENV})" in out


def test_serve_main_admin_key_flag_wins_over_the_environment(
    tmp_path: Path, fake_triton: type[_FinishedServer]
) -> None:
    assert serve_main(tmp_path, admin_key="from-flag", environ={ADMIN_KEY_ENV: "from-secret"}) == 0
    assert _flag(fake_triton.argv, "http-restricted-api").endswith(":admin-key=from-flag")


def test_serve_main_prints_a_generated_admin_key(
    tmp_path: Path, fake_triton: type[_FinishedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(tmp_path, environ={}) == 0
    key = _flag(fake_triton.argv, "http-restricted-api").rsplit("=", 1)[1]
    assert key in capsys.readouterr().out


def test_serve_main_refuses_an_empty_admin_key_variable(
    tmp_path: Path, fake_triton: type[_FinishedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(tmp_path, environ={ADMIN_KEY_ENV: ""}) == 2
    assert f"${ADMIN_KEY_ENV} is empty" in capsys.readouterr().err


def test_larr_serve_passes_the_tls_flags_through(tmp_path: Path, fake_triton: type[_FinishedServer]) -> None:
    from larr.cli import build_parser

    cert, key, ca = _pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    argv = ["serve", "--model-repository", str(tmp_path), "--admin-key", "k"]
    args = build_parser().parse_args([*argv, "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)])
    assert args.func(args) == 0
    assert _flag(fake_triton.argv, "grpc-server-cert") == str(cert.resolve())
    assert _flag(fake_triton.argv, "grpc-root-cert") == str(ca.resolve())


def test_wait_ready_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('E model failed to load: boom'); raise SystemExit(3)"], stdout=out
        )
    process.wait()
    options = ServerOptions(model_repository=tmp_path, grpc_port=launcher.free_port())
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*boom"):
        launcher._wait_ready(options, process, timeout_s=60, where_log=lambda: log.read_text())


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
            with launcher.supervising(options, process):
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
    launcher._stop(process, grace_s=0.5)
    assert process.returncode == -9
    process.stdout.close()


def test_stop_lets_a_server_exit_on_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", EXITS_ON_SIGINT],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    process.stdout.readline()
    launcher._stop(process, grace_s=60)
    assert process.returncode == 0
    process.stdout.close()


def test_sigterm_unwinds_with_blocks_so_started_servers_are_stopped(tmp_path: Path) -> None:
    # `larr demo`/`larr bench` stop their tritonserver in a `with` block's exit; SIGTERM must reach it
    marker = tmp_path / "cleaned-up"
    script = (
        "import sys, time\n"
        "from larr.serving.launcher import exit_cleanly_on_sigterm\n"
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


def test_a_dead_server_is_restarted_after_a_pause_that_doubles_while_it_keeps_dying_soon():
    from larr.serving.launcher import (
        SERVER_RESTART_BACKOFF_S,
        SERVER_RESTART_MAX_BACKOFF_S,
        SERVER_STABLE_S,
        _describe_exit,
        restart_pause,
    )

    soon, later = SERVER_STABLE_S / 10, SERVER_STABLE_S * 2
    pause, pauses = SERVER_RESTART_BACKOFF_S, []
    for restarts in range(9):  # a server that dies within a minute of every start
        pause = restart_pause(restarts, soon, pause)
        pauses.append(pause)
    base = SERVER_RESTART_BACKOFF_S
    assert pauses[:4] == [base, 2 * base, 4 * base, 8 * base]  # the first death is not a crash loop yet
    assert max(pauses) == SERVER_RESTART_MAX_BACKOFF_S == pauses[-1]
    assert restart_pause(5, later, SERVER_RESTART_MAX_BACKOFF_S) == base  # ran long enough: back to the first pause
    assert _describe_exit(-6) == "signal SIGABRT" and _describe_exit(3) == "exit code 3"


def test_free_port_picks_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outgoing connections take source ports from the ephemeral range; a server port chosen there can be taken
    between the pick and the server's bind. Below the range only a deliberate bind can take it."""
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    monkeypatch.setattr(launcher, "EPHEMERAL_RANGE_FILE", ranges)
    ports = launcher.free_ports(8)
    assert len(set(ports)) == 8
    assert all(launcher.LOWEST_PICKED_PORT <= port < 40000 for port in ports)
    for port in ports:  # each is bindable right now
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_port_skips_a_taken_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With room for just two ports below the range and one of them listening, the other is the answer."""
    ranges = tmp_path / "ip_local_port_range"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(launcher, "LOWEST_PICKED_PORT", port)
        ranges.write_text(f"{port + 2} 60999\n")
        monkeypatch.setattr(launcher, "EPHEMERAL_RANGE_FILE", ranges)
        assert {launcher.free_port() for _ in range(10)} == {port + 1}


def test_free_port_without_room_below_the_range_lets_the_kernel_pick(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1024 65000\n")
    monkeypatch.setattr(launcher, "EPHEMERAL_RANGE_FILE", ranges)
    port = launcher.free_port()
    assert 1024 <= port <= 65000
