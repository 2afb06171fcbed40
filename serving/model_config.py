"""Reading a Triton model config as the python backend hands it over (``json.loads(args["model_config"])``).

Torch-free and import-free, so that the request checks (larr.serving.ctr_request, .embedder_batch) can read
their limits from the config on the torch-free serving path (pyproject's import-linter contracts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from larr.contract import PARAM_PROCESS_NICE


def model_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a model config as parsed from ``args["model_config"]`` JSON: name -> string."""
    return {name: value["string_value"] for name, value in config.get("parameters", {}).items()}


def apply_process_nice(params: Mapping[str, str]) -> int:
    """Lower this (stub) process's OS priority by the ``process_nice`` parameter, if any; returns the niceness
    now. A background embedder at niceness 19 gets a CPU only when the request path leaves it idle."""
    increment = int(params.get(PARAM_PROCESS_NICE, 0))
    if increment < 0:
        raise ValueError(f"{PARAM_PROCESS_NICE} must be >= 0 (a model may lower its priority, not raise it)")
    return os.nice(increment)


def tensor_names(config: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names), in config order."""
    return tuple(t["name"] for t in config["input"]), tuple(t["name"] for t in config["output"])
