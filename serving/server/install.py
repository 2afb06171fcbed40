"""Find a runnable ``tritonserver``: on PATH (the NGC image, a source build), else the nvidia-pytriton wheel's bundle.

The bundle (Triton 2.51 with the python backend) needs preparing before it serves python models: its
python-backend stub must be copied to where the backend looks for it, and the stub must be told to run this
interpreter's environment (:func:`python_stub_env`). :func:`locate_triton` does both, once per start.
"""

from __future__ import annotations

import filecmp
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVE_HINT = (
    "install the serving extra (pip install 'larr[serve]': nvidia-pytriton==0.7.0 bundles tritonserver 2.51 "
    "with the python backend) or run inside the NGC image nvcr.io/nvidia/tritonserver:24.10-py3"
)


class TritonNotFoundError(RuntimeError):
    """tritonserver (or a piece it needs, such as the python-backend stub) is not installed."""


@dataclass(frozen=True)
class TritonInstall:
    """A runnable tritonserver and what it needs beyond the binary."""

    executable: Path
    # None: the binary's compiled-in default (/opt/tritonserver/backends in the NGC image).
    backend_directory: Path | None = None
    cache_directory: Path | None = None
    # Environment variables to set for the server (and through it, the python-backend stubs).
    env: Mapping[str, str] = field(default_factory=dict)


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


def server_env(install: TritonInstall, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start ``install``'s tritonserver in."""
    env = dict(os.environ if base is None else base)
    env.update(install.env)
    return env


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
        env["LD_LIBRARY_PATH"] = prepend_path(libdir, os.environ.get("LD_LIBRARY_PATH"))
    env["PATH"] = prepend_path(str(Path(sys.executable).parent), os.environ.get("PATH"))
    return env


def prepare_pytriton_bundle(bundle_dir: Path, python_version: tuple[int, int] | None = None) -> TritonInstall:
    """Put the python-backend stub for ``python_version`` (default: the running one) into the bundle.

    The wheel ships one stub per Python version under ``python_backend_stubs/<X.Y>/`` and none in
    ``backends/python/``, where the python backend looks for it. The copy is skipped when an identical
    stub is already there and is done through a temporary file and ``os.replace``, so a concurrent
    start never sees a half-written executable.
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


def prepend_path(entry: str, current: str | None) -> str:
    """``entry`` first in a PATH-like variable whose value is ``current`` (None or empty: unset)."""
    return entry if not current else f"{entry}{os.pathsep}{current}"
