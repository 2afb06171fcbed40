"""Unit tests of larr.serving.server.install: locating tritonserver and preparing the pytriton bundle's stub."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from larr.serving.server import install as install_module
from larr.serving.server.install import (
    TritonInstall,
    TritonNotFoundError,
    find_tritonserver,
    locate_triton,
    prepare_pytriton_bundle,
    python_stub_env,
    server_env,
)

PY = sys.version_info[:2]


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
    monkeypatch.setattr(install_module.importlib.metadata, "version", lambda name: {"numpy": "2.5.2"}[name])
    with pytest.raises(TritonNotFoundError, match=r"numpy 2\.5\.2.*NumPy 1\.x.*pip install 'numpy<2'"):
        prepare_pytriton_bundle(bundle)
    assert not (bundle / "backends" / "python" / "triton_python_backend_stub").exists()


def test_prepare_bundle_without_binary_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(TritonNotFoundError, match="nvidia-pytriton"):
        prepare_pytriton_bundle(tmp_path / "empty")


def test_locate_prefers_tritonserver_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(install_module.shutil, "which", lambda name: "/opt/tritonserver/bin/tritonserver")
    monkeypatch.setattr(install_module, "_pytriton_bundle_dir", lambda: _fake_bundle(tmp_path / "bundle"))
    install = locate_triton()
    assert install == TritonInstall(executable=Path("/opt/tritonserver/bin/tritonserver"))
    assert find_tritonserver() == Path("/opt/tritonserver/bin/tritonserver")


def test_locate_falls_back_to_the_pytriton_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "bundle")
    monkeypatch.setattr(install_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(install_module, "_pytriton_bundle_dir", lambda: bundle)
    assert find_tritonserver() == bundle / "bin" / "tritonserver"
    assert (bundle / "backends" / "python" / "triton_python_backend_stub").is_file()


def test_locate_without_any_tritonserver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(install_module, "_pytriton_bundle_dir", lambda: None)
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
