"""Reading a Triton model config as the python backend hands it over (``json.loads(args["model_config"])``).

Torch-free and import-free, so that the request checks (larr.serving.ctr_request, .embedder_batch) can read
their limits from the config on the torch-free serving path (pyproject's import-linter contracts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def model_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a model config as parsed from ``args["model_config"]`` JSON: name -> string."""
    return {name: value["string_value"] for name, value in config.get("parameters", {}).items()}


def tensor_names(config: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names), in config order."""
    return tuple(t["name"] for t in config["input"]), tuple(t["name"] for t in config["output"])
