"""Unit tests of larr.serving.server.serve (``larr serve``): option errors, the admin key, the restart policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from larr.serving.server import serve
from larr.serving.server.install import TritonInstall
from larr.serving.server.options import ADMIN_KEY_ENV
from larr.serving.server.serve import serve_main

from .test_options import command_flag, pem_files


def test_serve_main_reports_a_missing_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(tmp_path / "missing") == 2
    assert "not a directory" in capsys.readouterr().err


def test_serve_main_reports_a_key_without_a_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = pem_files(tmp_path, "server.key")
    assert serve_main(tmp_path, tls_key=key) == 2
    assert "larr serve: --tls-key needs --tls-cert" in capsys.readouterr().err


def test_serve_main_reports_a_missing_certificate_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = pem_files(tmp_path, "server.key")
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
    monkeypatch.setattr(serve, "locate_triton", lambda: TritonInstall(executable=Path("/usr/bin/tritonserver")))
    monkeypatch.setattr(serve.subprocess, "Popen", _FinishedServer)
    return _FinishedServer


def test_serve_main_takes_the_admin_key_from_the_environment_and_does_not_print_it(
    tmp_path: Path, fake_triton: type[_FinishedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(tmp_path, environ={ADMIN_KEY_ENV: "from-secret"}) == 0
    assert command_flag(fake_triton.argv, "grpc-restricted-protocol").endswith(":admin-key=from-secret")
    out = capsys.readouterr().out
    assert "from-secret" not in out and f"(from ${ADMIN_KEY_ENV})" in out


def test_serve_main_admin_key_flag_wins_over_the_environment(
    tmp_path: Path, fake_triton: type[_FinishedServer]
) -> None:
    assert serve_main(tmp_path, admin_key="from-flag", environ={ADMIN_KEY_ENV: "from-secret"}) == 0
    assert command_flag(fake_triton.argv, "http-restricted-api").endswith(":admin-key=from-flag")


def test_serve_main_prints_a_generated_admin_key(
    tmp_path: Path, fake_triton: type[_FinishedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(tmp_path, environ={}) == 0
    key = command_flag(fake_triton.argv, "http-restricted-api").rsplit("=", 1)[1]
    assert key in capsys.readouterr().out


def test_serve_main_refuses_an_empty_admin_key_variable(
    tmp_path: Path, fake_triton: type[_FinishedServer], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(tmp_path, environ={ADMIN_KEY_ENV: ""}) == 2
    assert f"${ADMIN_KEY_ENV} is empty" in capsys.readouterr().err


def test_larr_serve_passes_the_tls_flags_through(tmp_path: Path, fake_triton: type[_FinishedServer]) -> None:
    from larr.cli import build_parser

    cert, key, ca = pem_files(tmp_path, "server.pem", "server.key", "ca.pem")
    argv = ["serve", "--model-repository", str(tmp_path), "--admin-key", "k"]
    args = build_parser().parse_args([*argv, "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)])
    assert args.func(args) == 0
    assert command_flag(fake_triton.argv, "grpc-server-cert") == str(cert.resolve())
    assert command_flag(fake_triton.argv, "grpc-root-cert") == str(ca.resolve())


def test_a_dead_server_is_restarted_after_a_pause_that_doubles_while_it_keeps_dying_soon():
    from larr.serving.server.serve import (
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
