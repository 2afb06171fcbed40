"""Find ``perf_analyzer`` and the environment it starts in, outside the NGC container.

On a plain machine it comes from the ``tritonclient[all]==2.51.0`` manylinux wheel (newer wheels need glibc
2.38), which links ``libcudart.so.12`` even for CPU-only runs and ``libb64.so.0d``: :func:`perf_analyzer_env`
finds the first in the ``nvidia-cuda-runtime-cu12`` wheel and says what to install when either is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from larr.serving.server.install import prepend_path

PERF_ANALYZER_HINT = "pip install 'tritonclient[all]==2.51.0' (newer wheels need glibc >= 2.38)"


class PerfAnalyzerNotFoundError(RuntimeError):
    """perf_analyzer or one of its shared libraries is not installed."""


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
        env["LD_LIBRARY_PATH"] = prepend_path(str(cudart), env.get("LD_LIBRARY_PATH"))
    elif not _loadable("libcudart.so.12", env):
        raise PerfAnalyzerNotFoundError(
            "perf_analyzer needs libcudart.so.12: pip install nvidia-cuda-runtime-cu12 (or install the CUDA 12 runtime)"
        )
    if not _loadable("libb64.so.0d", env):
        raise PerfAnalyzerNotFoundError("perf_analyzer needs libb64.so.0d: apt-get install libb64-0d (Debian/Ubuntu)")
    return env
