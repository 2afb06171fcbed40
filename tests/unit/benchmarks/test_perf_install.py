"""Unit tests of larr.benchmarks.perf_install: finding perf_analyzer and the libraries it needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from larr.benchmarks import perf_install
from larr.benchmarks.perf_install import PerfAnalyzerNotFoundError, find_perf_analyzer, perf_analyzer_env


def test_perf_analyzer_env_prepends_the_cuda_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(perf_install, "_cuda_runtime_lib_dir", lambda: tmp_path)
    monkeypatch.setattr(perf_install, "_loadable", lambda soname, env: True)
    env = perf_analyzer_env({"LD_LIBRARY_PATH": "/already"})
    assert env["LD_LIBRARY_PATH"] == f"{tmp_path}{os.pathsep}/already"


def test_perf_analyzer_env_without_cudart_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perf_install, "_cuda_runtime_lib_dir", lambda: None)
    monkeypatch.setattr(perf_install, "_loadable", lambda soname, env: False)
    with pytest.raises(PerfAnalyzerNotFoundError, match="nvidia-cuda-runtime-cu12"):
        perf_analyzer_env({})


def test_perf_analyzer_env_without_libb64_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(perf_install, "_cuda_runtime_lib_dir", lambda: tmp_path)
    monkeypatch.setattr(perf_install, "_loadable", lambda soname, env: soname != "libb64.so.0d")
    with pytest.raises(PerfAnalyzerNotFoundError, match="libb64-0d"):
        perf_analyzer_env({})


def test_loadable_checks_with_the_given_environment() -> None:
    assert perf_install._loadable("libc.so.6", dict(os.environ))
    assert not perf_install._loadable("libdefinitely-not-there.so.1", dict(os.environ))


def test_find_perf_analyzer_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(perf_install.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(perf_install.shutil, "which", lambda name: None)
    with pytest.raises(PerfAnalyzerNotFoundError, match=r"tritonclient\[all\]==2\.51\.0"):
        find_perf_analyzer()


def test_find_perf_analyzer_prefers_the_one_beside_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "perf_analyzer"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(perf_install.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(perf_install.shutil, "which", lambda name: "/elsewhere/perf_analyzer")
    assert find_perf_analyzer() == binary
