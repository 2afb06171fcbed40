"""Which machine the numbers come from: the device to benchmark and a short, stable folder name for it.

    cpu-2core-amd-epyc          a CPU host (cores the process may use, CPU model)
    gpu-nvidia-h100-80gb-hbm3   a GPU host (the first CUDA device's name)
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

# Words in CPU model strings that say nothing about the machine.
_CPU_NOISE = re.compile(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|\b\d+-core\b|@.*$", re.IGNORECASE)
_MAX_SLUG_WORDS = 4


@dataclass(frozen=True)
class Machine:
    """The device the benchmark runs on, as recorded next to the results."""

    name: str  # results folder name
    device: str  # "cpu" | "cuda"
    cpu_model: str
    cores: int  # CPU cores this process may use
    gpu_model: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def slug(text: str, max_words: int = _MAX_SLUG_WORDS) -> str:
    """Lower-case words of ``text`` joined by '-': 'AMD EPYC 7B13 64-Core Processor' -> 'amd-epyc-7b13'."""
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower())
    return "-".join(words[:max_words]) or "unknown"


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU model from /proc/cpuinfo (``cpuinfo`` to parse a given text), else ``platform.processor()``."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_name(device: str, cpu_model: str, cores: int, gpu_model: str | None = None) -> str:
    """``cpu-<cores>core-<cpu slug>`` or ``gpu-<gpu slug>``."""
    if device == "cuda":
        if not gpu_model:
            raise ValueError("a cuda machine needs the GPU's name")
        return f"gpu-{slug(gpu_model)}"
    cleaned = _CPU_NOISE.sub(" ", cpu_model)
    return f"cpu-{cores}core-{slug(cleaned)}"


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when torch sees a CUDA GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise RuntimeError("--device cuda: torch sees no CUDA GPU on this machine")
    return "cpu"


def detect_machine(requested_device: str = "auto") -> Machine:
    device = resolve_device(requested_device)
    gpu_model = None
    if device == "cuda":
        import torch

        gpu_model = torch.cuda.get_device_name(0)
    cpu_model, cores = cpu_model_name(), usable_cores()
    return Machine(machine_name(device, cpu_model, cores, gpu_model), device, cpu_model, cores, gpu_model)
